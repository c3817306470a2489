// Package testutil holds the helpers Sluice's acceptance tests share: starting
// and restarting a real nsqd on ephemeral ports, a raw V2 protocol connection,
// go-nsq producer/consumer helpers, a polling WaitFor, a real HTTP auth server
// (protocol.md §12.2), test TLS certificates and /stats decoding.
//
// Everything here talks to daemons through their public API and real sockets;
// nothing reaches into daemon internals.
package testutil
