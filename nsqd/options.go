package nsqd

import (
	"crypto/md5"
	"crypto/tls"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"time"
)

// Options configures an nsqd. Field names follow NSQ's; NewOptions returns
// NSQ 1.3.0's defaults. The `flag` and `cfg` tags name the command-line flag
// and the TOML/`/config` key of each option (see protocol.md §15.2).
type Options struct {
	ID          int64          `flag:"node-id" cfg:"id"`            // 0..1023; appears in nothing on the wire but /config/id
	LogLevel    string         `flag:"log-level" cfg:"log_level"`   // debug|info|warn|error|fatal
	LogPrefix   string         `flag:"log-prefix" cfg:"log_prefix"` // prefix of every log line
	Logger      *slog.Logger   `flag:"-" cfg:"-"`                   // where logs go; nil = discard
	LogLevelVar *slog.LevelVar `flag:"-" cfg:"-"`                   // run-time log level (PUT /config/log_level)

	TCPAddress               string        `flag:"tcp-address" cfg:"tcp_address"`                 // host:port or Unix socket path
	HTTPAddress              string        `flag:"http-address" cfg:"http_address"`               // "" disables HTTP
	HTTPSAddress             string        `flag:"https-address" cfg:"https_address"`             // used only with TLS cert/key
	BroadcastAddress         string        `flag:"broadcast-address" cfg:"broadcast_address"`     // advertised to lookupd
	BroadcastTCPPort         int           `flag:"broadcast-tcp-port" cfg:"broadcast_tcp_port"`   // 0 = actual TCP port
	BroadcastHTTPPort        int           `flag:"broadcast-http-port" cfg:"broadcast_http_port"` // 0 = actual HTTP port
	NSQLookupdTCPAddresses   []string      `flag:"lookupd-tcp-address" cfg:"nsqlookupd_tcp_addresses"`
	AuthHTTPAddresses        []string      `flag:"auth-http-address" cfg:"auth_http_addresses"`
	HTTPClientConnectTimeout time.Duration `flag:"http-client-connect-timeout" cfg:"http_client_connect_timeout"`
	HTTPClientRequestTimeout time.Duration `flag:"http-client-request-timeout" cfg:"http_client_request_timeout"`

	DataPath        string        `flag:"data-path" cfg:"data_path"`                   // "" = working directory
	MemQueueSize    int64         `flag:"mem-queue-size" cfg:"mem_queue_size"`         // messages per topic/channel in memory
	MaxBytesPerFile int64         `flag:"max-bytes-per-file" cfg:"max_bytes_per_file"` // disk queue file roll size
	SyncEvery       int64         `flag:"sync-every" cfg:"sync_every"`                 // fsync every N disk ops
	SyncTimeout     time.Duration `flag:"sync-timeout" cfg:"sync_timeout"`             // fsync at least this often

	QueueScanInterval        time.Duration `flag:"-" cfg:"queue_scan_interval"` // how often timeouts/deferrals are checked
	QueueScanRefreshInterval time.Duration `flag:"-" cfg:"queue_scan_refresh_interval"`
	QueueScanSelectionCount  int           `flag:"queue-scan-selection-count" cfg:"queue_scan_selection_count"` // accepted for compatibility
	QueueScanWorkerPoolMax   int           `flag:"queue-scan-worker-pool-max" cfg:"queue_scan_worker_pool_max"` // accepted for compatibility
	QueueScanDirtyPercent    float64       `flag:"-" cfg:"queue_scan_dirty_percent"`

	MsgTimeout    time.Duration `flag:"msg-timeout" cfg:"msg_timeout"`         // default in-flight timeout
	MaxMsgTimeout time.Duration `flag:"max-msg-timeout" cfg:"max_msg_timeout"` // IDENTIFY msg_timeout max; TOUCH cap
	MaxMsgSize    int64         `flag:"max-msg-size" cfg:"max_msg_size"`       // largest message body
	MaxBodySize   int64         `flag:"max-body-size" cfg:"max_body_size"`     // largest IDENTIFY/AUTH/MPUB body
	MaxReqTimeout time.Duration `flag:"max-req-timeout" cfg:"max_req_timeout"` // REQ clamp; DPUB/defer maximum
	ClientTimeout time.Duration `flag:"-" cfg:"client_timeout"`                // fixed 60s; default heartbeat = half

	MaxHeartbeatInterval   time.Duration `flag:"max-heartbeat-interval" cfg:"max_heartbeat_interval"`
	MaxRdyCount            int64         `flag:"max-rdy-count" cfg:"max_rdy_count"`
	MaxOutputBufferSize    int64         `flag:"max-output-buffer-size" cfg:"max_output_buffer_size"`
	MaxOutputBufferTimeout time.Duration `flag:"max-output-buffer-timeout" cfg:"max_output_buffer_timeout"`
	MinOutputBufferTimeout time.Duration `flag:"min-output-buffer-timeout" cfg:"min_output_buffer_timeout"`
	OutputBufferTimeout    time.Duration `flag:"output-buffer-timeout" cfg:"output_buffer_timeout"`
	MaxChannelConsumers    int           `flag:"max-channel-consumers" cfg:"max_channel_consumers"` // 0 = unlimited

	StatsdAddress          string        `flag:"statsd-address" cfg:"statsd_address"`
	StatsdPrefix           string        `flag:"statsd-prefix" cfg:"statsd_prefix"`
	StatsdInterval         time.Duration `flag:"statsd-interval" cfg:"statsd_interval"`
	StatsdMemStats         bool          `flag:"statsd-mem-stats" cfg:"statsd_mem_stats"`
	StatsdUDPPacketSize    int           `flag:"statsd-udp-packet-size" cfg:"statsd_udp_packet_size"`
	StatsdExcludeEphemeral bool          `flag:"statsd-exclude-ephemeral" cfg:"statsd_exclude_ephemeral"`

	E2EProcessingLatencyWindowTime  time.Duration `flag:"e2e-processing-latency-window-time" cfg:"e2e_processing_latency_window_time"`
	E2EProcessingLatencyPercentiles []float64     `flag:"e2e-processing-latency-percentile" cfg:"e2e_processing_latency_percentiles"`

	TLSCert             string `flag:"tls-cert" cfg:"tls_cert"`
	TLSKey              string `flag:"tls-key" cfg:"tls_key"`
	TLSClientAuthPolicy string `flag:"tls-client-auth-policy" cfg:"tls_client_auth_policy"`
	TLSRootCAFile       string `flag:"tls-root-ca-file" cfg:"tls_root_ca_file"`
	TLSRequired         int    `flag:"tls-required" cfg:"tls_required"` // TLSNotRequired, TLSRequiredExceptHTTP or TLSRequired
	TLSMinVersion       uint16 `flag:"tls-min-version" cfg:"tls_min_version"`

	DeflateEnabled  bool `flag:"deflate" cfg:"deflate"`
	MaxDeflateLevel int  `flag:"max-deflate-level" cfg:"max_deflate_level"`
	SnappyEnabled   bool `flag:"snappy" cfg:"snappy"`

	// Durable topics (Sluice): off by default, so nsqd behaves as NSQ does.
	Durable             bool          `flag:"durable" cfg:"durable"`                             // every non-ephemeral topic is durable unless created otherwise
	RetentionTime       time.Duration `flag:"retention-time" cfg:"retention_time"`               // keep finished durable segments this long (0 = remove at once)
	RetentionBytes      int64         `flag:"retention-bytes" cfg:"retention_bytes"`             // keep the newest finished durable segments up to this size (0 = none)
	DurableSegmentBytes int64         `flag:"durable-segment-bytes" cfg:"durable_segment_bytes"` // roll a durable topic's segment at this size

	// Message policies (Sluice): the node default of a channel's
	// max_attempts; 0 = unlimited, as in NSQ.
	MaxAttempts int `flag:"max-attempts" cfg:"max_attempts"`
	// KeepDeferred keeps deferred messages (DPUB, REQ with a delay) deferred
	// until their deadline when they go to disk and across restarts; NSQ
	// delivers them as soon as they are read back. Durable topics always
	// keep deadlines.
	KeepDeferred bool `flag:"keep-deferred" cfg:"keep_deferred"`
	// DiskWriteBuffer (Sluice), when positive, lets each disk queue collect
	// up to this many bytes of messages in memory and write them with one
	// write syscall (within 10ms, before every sync and before a reader
	// needs them) instead of one write per publish. Space is reserved on
	// disk as they are put, so a full disk still fails the publish. The
	// price: a kill -9 loses the messages still buffered, which NSQ's
	// write-through queue leaves in the page cache. 0 = NSQ's behaviour.
	DiskWriteBuffer int64 `flag:"disk-write-buffer" cfg:"disk_write_buffer"`

	// ReplicaTimeout is how long a replicated topic's replica may be gone
	// before another live node replaces it (Sluice).
	ReplicaTimeout time.Duration `flag:"replica-timeout" cfg:"replica_timeout"`
	// ReplicaCompactEntries is how many Raft entries a replicated topic's
	// replica lets accumulate before it snapshots the channels' progress
	// and drops them (0: 50,000); the messages stay in the topic log.
	ReplicaCompactEntries int `flag:"replica-compact-entries" cfg:"replica_compact_entries"`
	// ReplicaHistoryRate bounds the bytes per second a replica restored
	// from a snapshot reads from the others as it copies the messages the
	// snapshot skipped, so a long copy leaves the nodes' disks and network
	// to live traffic (0: unlimited).
	ReplicaHistoryRate int64 `flag:"replica-history-rate" cfg:"replica_history_rate"`

	// LookupdPingInterval is how often nsqd PINGs each nsqlookupd (fixed 15s
	// in NSQ; settable for tests).
	LookupdPingInterval time.Duration `flag:"-" cfg:"-"`
}

// TLS requirement levels (the values /config/tls_required reports).
const (
	TLSNotRequired        = 0
	TLSRequiredExceptHTTP = 1
	TLSRequired           = 2
)

// NewOptions returns NSQ 1.3.0's defaults.
func NewOptions() *Options {
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "localhost"
	}
	h := md5.Sum([]byte(hostname))
	return &Options{
		ID:        int64(crc32.ChecksumIEEE(h[:]) % 1024),
		LogLevel:  "info",
		LogPrefix: "[nsqd] ",

		TCPAddress:               "0.0.0.0:4150",
		HTTPAddress:              "0.0.0.0:4151",
		HTTPSAddress:             "0.0.0.0:4152",
		BroadcastAddress:         hostname,
		HTTPClientConnectTimeout: 2 * time.Second,
		HTTPClientRequestTimeout: 5 * time.Second,

		MemQueueSize:    10000,
		MaxBytesPerFile: 100 * 1024 * 1024,
		SyncEvery:       2500,
		SyncTimeout:     2 * time.Second,

		DurableSegmentBytes: 16 << 20,
		ReplicaTimeout:      5 * time.Minute,

		QueueScanInterval:        100 * time.Millisecond,
		QueueScanRefreshInterval: 5 * time.Second,
		QueueScanSelectionCount:  20,
		QueueScanWorkerPoolMax:   4,
		QueueScanDirtyPercent:    0.25,

		MsgTimeout:    60 * time.Second,
		MaxMsgTimeout: 15 * time.Minute,
		MaxMsgSize:    1024 * 1024,
		MaxBodySize:   5 * 1024 * 1024,
		MaxReqTimeout: time.Hour,
		ClientTimeout: 60 * time.Second,

		MaxHeartbeatInterval:   60 * time.Second,
		MaxRdyCount:            2500,
		MaxOutputBufferSize:    64 * 1024,
		MaxOutputBufferTimeout: 30 * time.Second,
		MinOutputBufferTimeout: 25 * time.Millisecond,
		OutputBufferTimeout:    250 * time.Millisecond,

		StatsdPrefix:        "nsq.%s",
		StatsdInterval:      60 * time.Second,
		StatsdMemStats:      true,
		StatsdUDPPacketSize: 508,

		E2EProcessingLatencyWindowTime: 10 * time.Minute,

		TLSMinVersion: tls.VersionTLS10,

		DeflateEnabled:  true,
		MaxDeflateLevel: 6,
		SnappyEnabled:   true,

		LookupdPingInterval: 15 * time.Second,
	}
}

// validate checks the options that make start-up fail (§6.4).
func (o *Options) validate() error {
	if o.ID < 0 || o.ID >= 1024 {
		return fmt.Errorf("--node-id must be in [0,1024), got %d", o.ID)
	}
	if o.MaxDeflateLevel < 1 || o.MaxDeflateLevel > 9 {
		return fmt.Errorf("--max-deflate-level must be in [1,9], got %d", o.MaxDeflateLevel)
	}
	for _, p := range o.E2EProcessingLatencyPercentiles {
		if p <= 0 || p > 1 {
			return fmt.Errorf("--e2e-processing-latency-percentile must be in (0,1], got %v", p)
		}
	}
	if o.TLSClientAuthPolicy != "" && o.TLSRequired == TLSNotRequired {
		o.TLSRequired = TLSRequired
	}
	if o.TLSRequired != TLSNotRequired && (o.TLSCert == "" || o.TLSKey == "") {
		return fmt.Errorf("cannot require TLS client connections without --tls-cert and --tls-key")
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key must be given together")
	}
	if o.MemQueueSize < 0 {
		return fmt.Errorf("--mem-queue-size must be >= 0, got %d", o.MemQueueSize)
	}
	if o.MaxMsgSize <= 0 || o.MaxBodySize <= 0 {
		return fmt.Errorf("--max-msg-size and --max-body-size must be positive")
	}
	if o.RetentionTime < 0 {
		return fmt.Errorf("--retention-time must be >= 0, got %v", o.RetentionTime)
	}
	if o.RetentionBytes < 0 {
		return fmt.Errorf("--retention-bytes must be >= 0, got %d", o.RetentionBytes)
	}
	if o.ReplicaCompactEntries < 0 {
		return fmt.Errorf("--replica-compact-entries must be >= 0 (0: %d), got %d", compactEvery, o.ReplicaCompactEntries)
	}
	if o.ReplicaHistoryRate < 0 {
		return fmt.Errorf("--replica-history-rate must be >= 0 (0: unlimited), got %d", o.ReplicaHistoryRate)
	}
	if o.ReplicaTimeout < time.Second {
		return fmt.Errorf("--replica-timeout must be at least 1s, got %s", o.ReplicaTimeout)
	}
	if o.MaxAttempts < 0 || o.MaxAttempts > maxAttemptsLimit {
		return fmt.Errorf("--max-attempts must be 0 (unlimited) or from 1 to %d, got %d", maxAttemptsLimit, o.MaxAttempts)
	}
	if o.DurableSegmentBytes < 4096 {
		return fmt.Errorf("--durable-segment-bytes must be >= 4096, got %d", o.DurableSegmentBytes)
	}
	if o.DiskWriteBuffer < 0 || o.DiskWriteBuffer > 64<<20 {
		return fmt.Errorf("--disk-write-buffer must be from 0 to 64 MiB, got %d", o.DiskWriteBuffer)
	}
	if o.MaxRdyCount < 0 {
		return fmt.Errorf("--max-rdy-count must be >= 0")
	}
	return nil
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
