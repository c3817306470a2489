// Package clients holds what go-nsq leaves to every user, shared by Sluice's
// command-line tools and usable by applications:
//
//   - Pool, a producer over several nsqd nodes that fails over between them,
//     keeps one go-nsq Producer per node and health-checks the nodes in the
//     background (round-robin, host-pool or epsilon-greedy selection, or
//     fan-out to every node).
//   - Consumer helpers: StartConsumer (nsqd and/or lookupd addresses) and
//     StopConsumers, lookupd discovery calls (/lookup, /topics) and an
//     adapter from go-nsq's logger to log/slog.
//   - The flags NSQ's tools share, with NSQ's names, defaults and help:
//     ConsumerFlags (--nsqd-tcp-address, --lookupd-http-address,
//     --consumer-opt, --max-in-flight) and the go-nsq Config they yield,
//     the --producer-opt values (ConfigOpts, ProducerConfig),
//     HTTPClientFlags and a repeatable string flag.
//
// Nothing here imports a daemon package; everything talks to nsqd and
// nsqlookupd over the network like any NSQ client.
package clients
