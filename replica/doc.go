// Package replica keeps replicated topics consistent across nodes with Raft
// (go.etcd.io/raft/v3): one group per replicated topic, driven by one Host
// per node that shares a ticker, a transport and the fsyncs among all its
// groups (multi-raft). See DESIGN.md for the whole design and the order in
// which it is built.
package replica
