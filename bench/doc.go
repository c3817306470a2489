// Package bench holds Sluice's load generators and the scenario runner behind
// the sluice-bench command.
//
// The clients here speak the nsqd TCP protocol "V2" directly over raw sockets
// (no go-nsq) so that the load generator costs as little as possible and never
// allocates per message: publishers fill one reusable buffer per batch,
// consumers parse frames out of one reusable buffer and batch their FINs.
//
// A scenario runs against a Launcher, which starts a fresh nsqd for it: the
// Sluice library in process, an nsqd binary (Sluice's apps/nsqd or the NSQ
// 1.3.0 reference) as a child process, or an already running nsqd at a fixed
// address. Every scenario returns a Result; the runner prints one table line
// per result and a JSON document for the whole run.
//
// See bench/README.md for what each scenario measures and how to read the
// figures.
package bench
