// Package clustertest holds the cross-daemon integration tests of Sluice's
// discovery (issue 3): several nsqlookupd and nsqd in one test process on
// 127.0.0.1 ephemeral ports (plus an nsqd subprocess where a test needs
// kill -9), driven through real sockets and go-nsq clients.
//
// The package has no non-test code; run it with
//
//	go test -race -count=1 ./internal/clustertest/
package clustertest
