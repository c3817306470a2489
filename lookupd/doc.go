// Package lookupd is Sluice's discovery daemon (nsqlookupd) as a library,
// wire-compatible with NSQ 1.3.0 (protocol.md §7, §10, §15.3).
//
// nsqds keep one TCP connection each to every lookupd (protocol "  V1"):
// IDENTIFY once, REGISTER/UNREGISTER their topics and channels as they come
// and go, PING every 15 s. Consumers and nsqadmin ask the HTTP API which
// nsqds carry a topic (/lookup), what exists (/topics, /channels, /nodes) and
// manage registrations (/topic/create, /topic/delete, /channel/create,
// /channel/delete, /topic/tombstone).
//
// # Usage
//
//	opts := lookupd.NewOptions()             // NSQ's defaults
//	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
//	opts.BroadcastAddress = "127.0.0.1"      // what nsqds use to reach our HTTP port
//	d, err := lookupd.New(opts)
//	err = d.Start()                          // listening and serving when it returns
//	fmt.Println(d.TCPAddr(), d.HTTPAddr())
//	d.Exit()                                 // closes everything, waits; idempotent
//
// # Structure
//
//   - registry.go: Registry, the registration database of §7.4 as a plain
//     type: no sockets, no clock (every time-dependent call takes now), one
//     RWMutex. Producers are keyed by the connection's remote ip:port and
//     indexed per peer (a disconnect or /nodes costs what that peer
//     registered, not the whole database).
//   - tcp.go: the V1 protocol, one goroutine per connection. Every error is
//     replied "<CODE> <text>" and closes the connection; closing removes the
//     peer from every registration. Replies to commands sent together go
//     out in one write.
//   - http.go: the HTTP API on internal/httpv1 (V1 response format), plus
//     /debug and /debug/pprof; metrics.go: /metrics (Prometheus).
//   - lookupcache.go: /lookup answers encoded once per topic and registry
//     generation (any registry write starts a new one) and kept until a
//     producer's inactivity or a tombstone's end changes them.
//   - httpfront.go: accepts the HTTP connections; answers keep-alive
//     "GET /lookup?topic=T" requests of plain form for registered topics
//     itself (net/http's bytes, one read and one write each) and hands every
//     other connection, with what it read, to the net/http server.
//   - lookupd.go, options.go: lifecycle and options.
//
// # Liveness and limits (where Sluice differs from the reference)
//
//   - Dead peers. The reference never times out a registration connection:
//     an nsqd whose host vanished without a FIN stays registered forever,
//     merely hidden after --inactive-producer-timeout. Sluice sets a read
//     deadline of --peer-read-timeout (default 30 s = 2 x nsqd's 15 s PING,
//     tolerating one lost PING) and drops the peer when it passes.
//     0 restores the reference behaviour.
//   - IDENTIFY bodies must be 1 byte to 5 MiB (the reference accepts any
//     size, and a negative size crashes it); request lines are bounded to
//     64 KiB (E_INVALID beyond).
//   - Address reuse. Each identified connection gets a registry handle
//     (Peer). A new connection from an ip:port still registered (the old
//     one reset, a NAT, a proxy) replaces the old peer: it inherits neither
//     its registrations nor its tombstones, and the old connection's late
//     cleanup or commands can no longer touch the new one's registrations
//     (the reference removes the successor's registrations in that race).
//     A superseded connection is answered E_INVALID and closed.
//   - IDENTIFY bodies are read as they arrive, so an announced size costs
//     memory only when the bytes are actually sent.
//   - HTTP answers are built from a copy taken under the registry's read
//     lock and written after it is released; each response has 30 s to be
//     written (pprof excepted) and idle keep-alive connections close after
//     2 min, so clients that stop reading do not pin connections forever.
//   - /topics, /channels, /lookup channels and /nodes topics are sorted
//     (order is unspecified by NSQ; sorting makes responses stable).
//
// Lock order: Daemon.mu (connection set) and Registry.mu are never held
// together.
package lookupd
