package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/nsqd"
)

// keyOverrides maps flags whose config key is not the flag name with - -> _.
var keyOverrides = map[string]string{
	"node-id":                           "id",
	"lookupd-tcp-address":               "nsqlookupd_tcp_addresses",
	"auth-http-address":                 "auth_http_addresses",
	"e2e-processing-latency-percentile": "e2e_processing_latency_percentiles",
}

// newFlagSet binds every nsqd flag (§15.2) to opts.
func newFlagSet(opts *nsqd.Options, level *slog.LevelVar) *flag.FlagSet {
	fs := flag.NewFlagSet("nsqd", flag.ContinueOnError)
	fs.Bool("version", false, "print version string")
	fs.String("config", "", "path to config file")
	fs.Bool("verbose", false, "[deprecated] has no effect, use --log-level")
	fs.Bool("worker-id", false, "[deprecated] use --node-id")
	fs.Var(config.LevelFlag{Var: level}, "log-level", "set log verbosity: debug, info, warn, error, or fatal")
	fs.StringVar(&opts.LogPrefix, "log-prefix", opts.LogPrefix, "log message prefix")
	fs.Int64Var(&opts.ID, "node-id", opts.ID, "unique part for message IDs, (int) in range [0,1024) (default is hash of hostname)")

	fs.StringVar(&opts.TCPAddress, "tcp-address", opts.TCPAddress, "<addr>:<port> to listen on for TCP clients")
	fs.StringVar(&opts.HTTPAddress, "http-address", opts.HTTPAddress, "<addr>:<port> to listen on for HTTP clients")
	fs.StringVar(&opts.HTTPSAddress, "https-address", opts.HTTPSAddress, "<addr>:<port> to listen on for HTTPS clients")
	fs.StringVar(&opts.BroadcastAddress, "broadcast-address", opts.BroadcastAddress, "address that will be registered with lookupd (defaults to the OS hostname)")
	fs.IntVar(&opts.BroadcastTCPPort, "broadcast-tcp-port", opts.BroadcastTCPPort, "TCP port that will be registered with lookupd (defaults to the TCP port that this nsqd is listening on)")
	fs.IntVar(&opts.BroadcastHTTPPort, "broadcast-http-port", opts.BroadcastHTTPPort, "HTTP port that will be registered with lookupd (defaults to the HTTP port that this nsqd is listening on)")
	fs.Var((*config.StringList)(&opts.NSQLookupdTCPAddresses), "lookupd-tcp-address", "lookupd TCP address (may be given multiple times)")
	fs.Var((*config.StringList)(&opts.AuthHTTPAddresses), "auth-http-address", "<addr>:<port> or a full url to query auth server (may be given multiple times)")
	fs.DurationVar(&opts.HTTPClientConnectTimeout, "http-client-connect-timeout", opts.HTTPClientConnectTimeout, "timeout for HTTP connect")
	fs.DurationVar(&opts.HTTPClientRequestTimeout, "http-client-request-timeout", opts.HTTPClientRequestTimeout, "timeout for HTTP request")

	fs.StringVar(&opts.DataPath, "data-path", opts.DataPath, "path to store disk-backed messages")
	fs.Int64Var(&opts.MemQueueSize, "mem-queue-size", opts.MemQueueSize, "number of messages to keep in memory (per topic/channel)")
	fs.Int64Var(&opts.MaxBytesPerFile, "max-bytes-per-file", opts.MaxBytesPerFile, "number of bytes per diskqueue file before rolling")
	fs.Int64Var(&opts.SyncEvery, "sync-every", opts.SyncEvery, "number of messages per diskqueue fsync")
	fs.DurationVar(&opts.SyncTimeout, "sync-timeout", opts.SyncTimeout, "duration of time per diskqueue fsync")
	fs.BoolVar(&opts.Durable, "durable", opts.Durable, "make every non-ephemeral topic durable unless created otherwise: OK to a publish only once it is fsynced, consumer progress kept across crashes (Sluice)")
	fs.DurationVar(&opts.RetentionTime, "retention-time", opts.RetentionTime, "durable topics: keep segments every channel has finished this long, for replay (0 = remove at once) (Sluice)")
	fs.Int64Var(&opts.RetentionBytes, "retention-bytes", opts.RetentionBytes, "durable topics: keep the newest finished segments up to this many bytes, for replay (0 = none) (Sluice)")
	fs.Int64Var(&opts.DurableSegmentBytes, "durable-segment-bytes", opts.DurableSegmentBytes, "durable topics: segment file size before rolling (Sluice)")
	fs.Int64Var(&opts.DiskWriteBuffer, "disk-write-buffer", opts.DiskWriteBuffer, "bytes of messages each disk queue may collect in memory to write at once (at most 10ms; before every fsync and every read of them); a kill -9 loses what is collected (0 = write every publish at once, as NSQ) (Sluice)")
	fs.BoolVar(&opts.KeepDeferred, "keep-deferred", opts.KeepDeferred, "deferred messages (DPUB, REQ with a delay) wait for their deadline also after a restart and when written to disk, instead of being delivered when read back (Sluice)")
	fs.DurationVar(&opts.ReplicaTimeout, "replica-timeout", opts.ReplicaTimeout, "replicated topics: how long a replica may be gone before another live node replaces it (Sluice)")
	fs.IntVar(&opts.ReplicaCompactEntries, "replica-compact-entries", opts.ReplicaCompactEntries, "replicated topics: Raft entries a replica lets accumulate before it snapshots the channels' progress and drops them; the messages stay in the topic log (0 = 50,000) (Sluice)")
	fs.Int64Var(&opts.ReplicaHistoryRate, "replica-history-rate", opts.ReplicaHistoryRate, "replicated topics: bytes per second a replica restored from a snapshot reads as it copies the messages the snapshot skipped from the others (0 = unlimited) (Sluice)")
	fs.IntVar(&opts.MaxAttempts, "max-attempts", opts.MaxAttempts, "default max_attempts of channels: a message about to be delivered more often goes to the channel's dead-letter topic (<topic>.dlq) (0 = unlimited) (Sluice)")
	fs.IntVar(&opts.QueueScanWorkerPoolMax, "queue-scan-worker-pool-max", opts.QueueScanWorkerPoolMax, "accepted for compatibility; Sluice scans deadline queues without workers")
	fs.IntVar(&opts.QueueScanSelectionCount, "queue-scan-selection-count", opts.QueueScanSelectionCount, "accepted for compatibility; every channel is checked each scan")

	fs.DurationVar(&opts.MsgTimeout, "msg-timeout", opts.MsgTimeout, "default duration to wait before auto-requeing a message")
	fs.DurationVar(&opts.MaxMsgTimeout, "max-msg-timeout", opts.MaxMsgTimeout, "maximum duration before a message will timeout")
	fs.Int64Var(&opts.MaxMsgSize, "max-msg-size", opts.MaxMsgSize, "maximum size of a single message in bytes")
	fs.DurationVar(&opts.MaxReqTimeout, "max-req-timeout", opts.MaxReqTimeout, "maximum requeuing timeout for a message")
	fs.Int64Var(&opts.MaxBodySize, "max-body-size", opts.MaxBodySize, "maximum size of a single command body")

	fs.DurationVar(&opts.MaxHeartbeatInterval, "max-heartbeat-interval", opts.MaxHeartbeatInterval, "maximum client configurable duration of time between client heartbeats")
	fs.Int64Var(&opts.MaxRdyCount, "max-rdy-count", opts.MaxRdyCount, "maximum RDY count for a client")
	fs.Int64Var(&opts.MaxOutputBufferSize, "max-output-buffer-size", opts.MaxOutputBufferSize, "maximum client configurable size (in bytes) for a client output buffer")
	fs.DurationVar(&opts.MaxOutputBufferTimeout, "max-output-buffer-timeout", opts.MaxOutputBufferTimeout, "maximum client configurable duration of time between flushing to a client")
	fs.DurationVar(&opts.MinOutputBufferTimeout, "min-output-buffer-timeout", opts.MinOutputBufferTimeout, "minimum client configurable duration of time between flushing to a client")
	fs.DurationVar(&opts.OutputBufferTimeout, "output-buffer-timeout", opts.OutputBufferTimeout, "default duration of time between flushing data to clients")
	fs.IntVar(&opts.MaxChannelConsumers, "max-channel-consumers", opts.MaxChannelConsumers, "maximum channel consumer connection count per nsqd instance (default 0, i.e., unlimited)")

	fs.StringVar(&opts.StatsdAddress, "statsd-address", opts.StatsdAddress, "UDP <addr>:<port> of a statsd daemon for pushing stats")
	fs.StringVar(&opts.StatsdPrefix, "statsd-prefix", opts.StatsdPrefix, "prefix used for keys sent to statsd (%s for host replacement)")
	fs.DurationVar(&opts.StatsdInterval, "statsd-interval", opts.StatsdInterval, "duration between pushing to statsd")
	fs.BoolVar(&opts.StatsdMemStats, "statsd-mem-stats", opts.StatsdMemStats, "toggle sending memory and GC stats to statsd")
	fs.IntVar(&opts.StatsdUDPPacketSize, "statsd-udp-packet-size", opts.StatsdUDPPacketSize, "the size in bytes of statsd UDP packets")
	fs.BoolVar(&opts.StatsdExcludeEphemeral, "statsd-exclude-ephemeral", opts.StatsdExcludeEphemeral, "Skip ephemeral topics and channels when sending stats to statsd")
	fs.Var(&floatList{&opts.E2EProcessingLatencyPercentiles}, "e2e-processing-latency-percentile", "message processing time percentiles (as float (0, 1.0]) to track (can be specified multiple times or comma separated '1.0,0.99,0.95', default none)")
	fs.DurationVar(&opts.E2EProcessingLatencyWindowTime, "e2e-processing-latency-window-time", opts.E2EProcessingLatencyWindowTime, "calculate end to end latency quantiles for this duration of time (ie: 60s would only show quantile calculations from the past 60 seconds)")

	fs.StringVar(&opts.TLSCert, "tls-cert", opts.TLSCert, "path to certificate file")
	fs.StringVar(&opts.TLSKey, "tls-key", opts.TLSKey, "path to key file")
	fs.StringVar(&opts.TLSClientAuthPolicy, "tls-client-auth-policy", opts.TLSClientAuthPolicy, "client certificate auth policy ('require' or 'require-verify')")
	fs.StringVar(&opts.TLSRootCAFile, "tls-root-ca-file", opts.TLSRootCAFile, "path to certificate authority file")
	fs.Var(&tlsRequiredFlag{&opts.TLSRequired}, "tls-required", "require TLS for client connections (true, false, tcp-https)")
	fs.Var(&tlsVersionFlag{&opts.TLSMinVersion}, "tls-min-version", "minimum SSL/TLS version acceptable ('tls1.0', 'tls1.1', 'tls1.2' or 'tls1.3')")

	fs.BoolVar(&opts.DeflateEnabled, "deflate", opts.DeflateEnabled, "enable deflate feature negotiation (client compression)")
	fs.IntVar(&opts.MaxDeflateLevel, "max-deflate-level", opts.MaxDeflateLevel, "max deflate compression level a client can negotiate (> values == > nsqd CPU usage)")
	fs.BoolVar(&opts.SnappyEnabled, "snappy", opts.SnappyEnabled, "enable snappy feature negotiation (client compression)")
	return fs
}

// floatList is a repeatable, comma-separable list of floats, sorted
// descending as NSQ does.
type floatList struct{ v *[]float64 }

func (f *floatList) String() string {
	if f.v == nil {
		return ""
	}
	parts := make([]string, len(*f.v))
	for i, x := range *f.v {
		parts[i] = strconv.FormatFloat(x, 'f', -1, 64)
	}
	return strings.Join(parts, ",")
}

func (f *floatList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		x, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return fmt.Errorf("invalid percentile %q: %w", p, err)
		}
		*f.v = append(*f.v, x)
	}
	// keep descending order like NSQ
	list := *f.v
	for i := 1; i < len(list); i++ {
		for j := i; j > 0 && list[j] > list[j-1]; j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
	return nil
}

// tlsRequiredFlag parses true/false (Go boolean spellings) or tcp-https.
type tlsRequiredFlag struct{ v *int }

func (f *tlsRequiredFlag) IsBoolFlag() bool { return true }
func (f *tlsRequiredFlag) String() string {
	if f.v == nil {
		return ""
	}
	switch *f.v {
	case nsqd.TLSRequired:
		return "true"
	case nsqd.TLSRequiredExceptHTTP:
		return "tcp-https"
	}
	return "false"
}
func (f *tlsRequiredFlag) Set(s string) error {
	if strings.EqualFold(s, "tcp-https") {
		*f.v = nsqd.TLSRequiredExceptHTTP
		return nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("invalid --tls-required %q (want true, false or tcp-https)", s)
	}
	*f.v = nsqd.TLSNotRequired
	if b {
		*f.v = nsqd.TLSRequired
	}
	return nil
}

// tlsVersionFlag parses tls1.0 ... tls1.3.
type tlsVersionFlag struct{ v *uint16 }

func (f *tlsVersionFlag) String() string {
	if f.v == nil {
		return "" // the zero value: lets flag print "(default tls1.0)"
	}
	switch *f.v {
	case tls.VersionTLS11:
		return "tls1.1"
	case tls.VersionTLS12:
		return "tls1.2"
	case tls.VersionTLS13:
		return "tls1.3"
	}
	return "tls1.0"
}
func (f *tlsVersionFlag) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "tls1.0":
		*f.v = tls.VersionTLS10
	case "tls1.1":
		*f.v = tls.VersionTLS11
	case "tls1.2":
		*f.v = tls.VersionTLS12
	case "tls1.3":
		*f.v = tls.VersionTLS13
	default:
		return fmt.Errorf("unknown tls version %q (want tls1.0, tls1.1, tls1.2 or tls1.3)", s)
	}
	return nil
}
