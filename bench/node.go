package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"syscall"
	"time"
)

// NodeConfig is what a scenario asks of the nsqd it runs against.
type NodeConfig struct {
	// MemQueueSize is nsqd's --mem-queue-size (0 sends everything to disk).
	MemQueueSize int64
	// DataPath is a fresh, empty directory for this node.
	DataPath string
	// Durable starts Sluice's nsqd with --durable (durable topics).
	Durable bool
	// SyncEvery, when > 0, is --sync-every.
	SyncEvery int64
	// LookupdTCPAddresses are given as --lookupd-tcp-address (nodes of a
	// cluster register with the same nsqlookupd); child processes only.
	LookupdTCPAddresses []string
	// ReadyTimeout bounds the wait for a child process's GET /ping
	// (0 = defaultReadyTimeout); a node that loads a large nsqd.dat needs
	// longer.
	ReadyTimeout time.Duration
}

// defaultReadyTimeout is how long a child nsqd may take to answer GET /ping.
const defaultReadyTimeout = 15 * time.Second

// Node is a running nsqd.
type Node struct {
	// TCPAddr and HTTPAddr are host:port addresses on 127.0.0.1.
	TCPAddr, HTTPAddr string
	// PID is the process id when nsqd runs as a separate process, else 0.
	PID int
	// Note says how the node was configured, for the report.
	Note string
	// DataPath is the node's data directory when the bench made it.
	DataPath string
	// Shared is true for an nsqd the bench did not start: the scenario
	// deletes its bench_* topics afterwards instead of stopping it.
	Shared bool
	// ReadyAfter is, for a child process, the time from starting it until
	// GET /ping answered 200 (to within the 20 ms poll); 0 otherwise.
	ReadyAfter time.Duration
	stop       func() error
}

// Stop shuts the node down and waits for it (for a child process, up to 30 s
// before it is killed).
func (n *Node) Stop() error {
	if n.stop == nil {
		return nil
	}
	return n.stop()
}

// Launcher starts a fresh nsqd for each scenario.
type Launcher interface {
	// Name identifies the target in the report (e.g. "sluice", "nsq-1.3.0").
	Name() string
	// Launch starts an nsqd configured by cfg and returns once it serves
	// both TCP and HTTP.
	Launch(ctx context.Context, cfg NodeConfig) (*Node, error)
}

// BinaryLauncher runs an nsqd binary (Sluice's apps/nsqd or NSQ's reference
// nsqd; both take NSQ's flags) as a child process on 127.0.0.1.
type BinaryLauncher struct {
	// Label is the target name in the report.
	Label string
	// Path is the nsqd executable.
	Path string
	// Args are extra command-line arguments.
	Args []string

	helpOnce sync.Once
	help     string // what --help printed
}

// Name implements Launcher.
func (b *BinaryLauncher) Name() string { return b.Label }

// Launch implements Launcher. Ports are chosen by binding :0 and releasing
// the port, which can race with another process; Launch retries a few times.
func (b *BinaryLauncher) Launch(ctx context.Context, cfg NodeConfig) (*Node, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		n, err := b.launchOnce(ctx, cfg)
		if err == nil {
			return n, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func (b *BinaryLauncher) launchOnce(ctx context.Context, cfg NodeConfig) (*Node, error) {
	tcpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	tcpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tcpPort))
	httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	args := []string{
		"--tcp-address=" + tcpAddr,
		"--http-address=" + httpAddr,
		"--broadcast-address=127.0.0.1",
		"--data-path=" + cfg.DataPath,
		"--mem-queue-size=" + strconv.FormatInt(cfg.MemQueueSize, 10),
		"--log-level=warn",
	}
	if cfg.Durable {
		args = append(args, "--durable")
	}
	if cfg.SyncEvery > 0 {
		args = append(args, "--sync-every="+strconv.FormatInt(cfg.SyncEvery, 10))
	}
	for _, a := range cfg.LookupdTCPAddresses {
		args = append(args, "--lookupd-tcp-address="+a)
	}
	args = append(args, b.Args...)
	logPath := filepath.Join(cfg.DataPath, "nsqd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create nsqd log: %w", err)
	}
	cmd := exec.Command(b.Path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	started := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", b.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	stop := func() error {
		select {
		case err := <-exited:
			return fmt.Errorf("nsqd exited early: %w", err)
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("nsqd did not exit within 30s of SIGTERM; killed")
		}
	}
	readyTimeout := cfg.ReadyTimeout
	if readyTimeout <= 0 {
		readyTimeout = defaultReadyTimeout
	}
	if err := waitHTTPReady(ctx, httpAddr, exited, readyTimeout); err != nil {
		_ = cmd.Process.Kill()
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return nil, fmt.Errorf("nsqd %s not ready: %w; log: %s", b.Path, err, bytes.TrimSpace(tail))
	}
	return &Node{TCPAddr: tcpAddr, HTTPAddr: httpAddr, PID: cmd.Process.Pid, stop: stop, ReadyAfter: time.Since(started),
		Note: fmt.Sprintf("child process %s --mem-queue-size=%d%s", filepath.Base(b.Path), cfg.MemQueueSize, cfg.flagNote()+argsNote(b.Args))}, nil
}

// AddrLauncher points at an nsqd that is already running. It cannot apply a
// NodeConfig, so figures that depend on --mem-queue-size say so.
type AddrLauncher struct {
	Label             string
	TCPAddr, HTTPAddr string
	// PID of the nsqd process, for RSS figures; 0 if unknown.
	PID int
}

// Name implements Launcher.
func (a *AddrLauncher) Name() string { return a.Label }

// Launch implements Launcher.
func (a *AddrLauncher) Launch(ctx context.Context, cfg NodeConfig) (*Node, error) {
	if err := waitHTTPReady(ctx, a.HTTPAddr, nil, defaultReadyTimeout); err != nil {
		return nil, err
	}
	n := &Node{TCPAddr: a.TCPAddr, HTTPAddr: a.HTTPAddr, PID: a.PID, Shared: true,
		Note: "external nsqd; its own --mem-queue-size applies"}
	// Leftovers of an interrupted run would distort depths and RSS.
	if err := DeleteBenchTopics(ctx, a.HTTPAddr); err != nil {
		return nil, err
	}
	return n, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// waitHTTPReady polls GET /ping until it answers 200, the process exits or
// timeout passes.
func waitHTTPReady(ctx context.Context, httpAddr string, exited <-chan error, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/ping", nil)
		resp, err := httpClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("process exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("GET /ping on %s: %w", httpAddr, ctx.Err())
		case <-tick.C:
		}
	}
}

// httpPost calls an nsqd action endpoint such as /channel/create.
func httpPost(ctx context.Context, httpAddr, path string, q url.Values) error {
	status, body, err := httpPostStatus(ctx, httpAddr, path, q)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("POST %s: %d %s %s", path, status, http.StatusText(status), body)
	}
	return nil
}

// httpPostStatus calls an nsqd endpoint and returns the HTTP status and
// (the first 4 KiB of) the body, for callers that tell answers apart.
func httpPostStatus(ctx context.Context, httpAddr, path string, q url.Values) (int, []byte, error) {
	u := "http://" + httpAddr + path + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, bytes.TrimSpace(body), nil
}

// CreateChannel creates topic and channel over HTTP.
func CreateChannel(ctx context.Context, httpAddr, topic, channel string) error {
	if err := httpPost(ctx, httpAddr, "/topic/create", url.Values{"topic": {topic}}); err != nil {
		return err
	}
	return httpPost(ctx, httpAddr, "/channel/create", url.Values{"topic": {topic}, "channel": {channel}})
}

// DeleteTopic deletes a topic over HTTP (used to clean up external nodes).
func DeleteTopic(ctx context.Context, httpAddr, topic string) error {
	return httpPost(ctx, httpAddr, "/topic/delete", url.Values{"topic": {topic}})
}

// DeleteBenchTopics deletes every topic named bench_* on the node.
func DeleteBenchTopics(ctx context.Context, httpAddr string) error {
	q := url.Values{"format": {"json"}, "include_clients": {"false"}, "include_mem": {"false"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/stats?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	var doc struct {
		Topics []TopicStats `json:"topics"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return fmt.Errorf("decode /stats: %w", err)
	}
	for _, t := range doc.Topics {
		if strings.HasPrefix(t.Name, "bench_") {
			if err := DeleteTopic(ctx, httpAddr, t.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// ChannelStats is the part of a channel's /stats entry the bench reads.
type ChannelStats struct {
	Name         string `json:"channel_name"`
	Depth        int64  `json:"depth"`
	BackendDepth int64  `json:"backend_depth"`
	InFlight     int64  `json:"in_flight_count"`
	MessageCount int64  `json:"message_count"`
	RequeueCount int64  `json:"requeue_count"`
	TimeoutCount int64  `json:"timeout_count"`
	ClientCount  int64  `json:"client_count"`
	// Message policies (Sluice): nil when /stats has none of their keys.
	*ChannelPolicyStats
}

// TopicStats is the part of a topic's /stats entry the bench reads.
type TopicStats struct {
	Name         string         `json:"topic_name"`
	Depth        int64          `json:"depth"`
	MessageCount int64          `json:"message_count"`
	Channels     []ChannelStats `json:"channels"`
	// Replicated topics (Sluice): nil on other topics. Leader is the
	// leader's broadcast_address:tcp_port, "" while there is none.
	Replicas *int    `json:"replicas,omitempty"`
	Leader   *string `json:"leader,omitempty"`
	// Message policies (Sluice): nil when /stats has none of their keys.
	*TopicPolicyStats
}

// GetTopicStats fetches /stats for one topic (without clients).
func GetTopicStats(ctx context.Context, httpAddr, topic string) (*TopicStats, error) {
	q := url.Values{"format": {"json"}, "topic": {topic}, "include_clients": {"false"}, "include_mem": {"false"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/stats?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	var doc struct {
		Topics []TopicStats `json:"topics"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode /stats: %w", err)
	}
	for i := range doc.Topics {
		if doc.Topics[i].Name == topic {
			return &doc.Topics[i], nil
		}
	}
	return nil, fmt.Errorf("topic %q not in /stats", topic)
}

// WaitChannelDepth polls /stats until the channel's depth reaches want or
// the context ends.
func WaitChannelDepth(ctx context.Context, httpAddr, topic, channel string, want int64) error {
	var last int64 = -1
	for {
		ts, err := GetTopicStats(ctx, httpAddr, topic)
		if err == nil {
			for _, c := range ts.Channels {
				if c.Name == channel {
					last = c.Depth
					if c.Depth >= want {
						return nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("channel %s/%s depth %d, want %d: %w", topic, channel, last, want, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NewNode describes a running node for Launcher implementations outside
// this package; stop shuts it down.
func NewNode(tcpAddr, httpAddr string, pid int, note string, stop func() error) *Node {
	return &Node{TCPAddr: tcpAddr, HTTPAddr: httpAddr, PID: pid, Note: note, stop: stop}
}

// flagNote lists the optional flags cfg sets, for Node.Note.
func (cfg NodeConfig) flagNote() string {
	s := ""
	if cfg.Durable {
		s += " --durable"
	}
	if cfg.SyncEvery > 0 {
		s += fmt.Sprintf(" --sync-every=%d", cfg.SyncEvery)
	}
	for _, a := range cfg.LookupdTCPAddresses {
		s += " --lookupd-tcp-address=" + a
	}
	return s
}

// FlagNote is flagNote for launchers outside the package.
func (cfg NodeConfig) FlagNote() string { return cfg.flagNote() }

// argsNote lists a launcher's extra flags for Node.Note.
func argsNote(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return " " + strings.Join(args, " ")
}
