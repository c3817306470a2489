// Command sluice runs a whole local cluster in one process: nsqlookupd, an
// nsqd registered with it (or --nodes of them, for replicated topics), and
// nsqadmin reading from the lookupd. Data lives under --data-path
// (./sluice-data by default; node-<i> folders in it with several nodes). Ctrl-C or SIGTERM shuts down
// cleanly: nsqd flushes every queue to disk, and the next start delivers it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/sluicemq/sluice/admin"
	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/nsqd"
)

const name = "sluice"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	dataPath         string
	broadcastAddress string
	nsqdTCP          string
	nsqdHTTP         string
	lookupdTCP       string
	lookupdHTTP      string
	adminHTTP        string
	memQueueSize     int64
	durable          bool
	nodes            int
}

func run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var o options
	level := new(slog.LevelVar)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dataPath, "data-path", "./sluice-data", "directory for nsqd's data (created if missing)")
	fs.StringVar(&o.broadcastAddress, "broadcast-address", "127.0.0.1", "address nsqd advertises to nsqlookupd (consumers connect to it)")
	fs.StringVar(&o.nsqdTCP, "nsqd-tcp-address", "0.0.0.0:4150", "nsqd TCP listen address")
	fs.StringVar(&o.nsqdHTTP, "nsqd-http-address", "0.0.0.0:4151", "nsqd HTTP listen address")
	fs.StringVar(&o.lookupdTCP, "nsqlookupd-tcp-address", "0.0.0.0:4160", "nsqlookupd TCP listen address")
	fs.StringVar(&o.lookupdHTTP, "nsqlookupd-http-address", "0.0.0.0:4161", "nsqlookupd HTTP listen address")
	fs.StringVar(&o.adminHTTP, "nsqadmin-http-address", "0.0.0.0:4171", "nsqadmin HTTP listen address (empty disables nsqadmin)")
	fs.Int64Var(&o.memQueueSize, "mem-queue-size", 10000, "nsqd: messages per topic/channel kept in memory")
	fs.IntVar(&o.nodes, "nodes", 1, "how many nsqd nodes to run (node i listens on the nsqd ports plus 1000*i); with 3 or more, POST /topic/create?topic=T&replicas=3 makes a replicated topic")
	fs.BoolVar(&o.durable, "durable", false, "nsqd: make every non-ephemeral topic durable (OK to a publish only once it is fsynced)")
	fs.Var(config.LevelFlag{Var: level}, "log-level", "set log verbosity: debug, info, warn, error, or fatal")
	version := fs.Bool("version", false, "print version string")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, config.VersionLine(name))
		return 0
	}
	if o.nodes < 1 || o.nodes > 9 {
		fmt.Fprintf(stderr, "%s: --nodes must be from 1 to 9, got %d\n", name, o.nodes)
		return 2
	}
	c, err := start(o, stdout, stderr, level)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	<-ctx.Done()
	c.exit()
	fmt.Fprintln(stdout, "sluice stopped")
	return 0
}

// cluster is the three daemons; exit stops them in reverse dependency order.
type cluster struct {
	lookupd *lookupd.Daemon
	nsqds   []*nsqd.NSQD
	admin   *admin.Admin
}

func (c *cluster) exit() {
	if c.admin != nil {
		c.admin.Exit()
	}
	for _, n := range c.nsqds {
		n.Exit() // flushes queues to disk
	}
	if c.lookupd != nil {
		c.lookupd.Exit()
	}
}

// offsetPort adds off to the port of a listen address (port 0 stays 0).
func offsetPort(addr string, off int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("port %q: %w", port, err)
	}
	if p == 0 || off == 0 {
		return addr, nil
	}
	if p+off > 65535 {
		return "", fmt.Errorf("port %d+%d is past 65535", p, off)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+off)), nil
}

// dialable turns a listen address into one a local client can dial
// (0.0.0.0 / :: become 127.0.0.1).
func dialable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func start(o options, stdout, stderr io.Writer, level *slog.LevelVar) (*cluster, error) {
	c := &cluster{}
	ok := false
	defer func() {
		if !ok {
			c.exit()
		}
	}()

	lo := lookupd.NewOptions()
	lo.TCPAddress, lo.HTTPAddress = o.lookupdTCP, o.lookupdHTTP
	lo.BroadcastAddress = o.broadcastAddress
	lo.Logger = config.NewLogger(stderr, "[nsqlookupd] ", level)
	l, err := lookupd.New(lo)
	if err != nil {
		return nil, fmt.Errorf("nsqlookupd: %w", err)
	}
	if err := l.Start(); err != nil {
		return nil, fmt.Errorf("nsqlookupd: %w", err)
	}
	c.lookupd = l
	lookupdTCP, lookupdHTTP := dialable(l.TCPAddr()), dialable(l.HTTPAddr())

	fmt.Fprintln(stdout, config.VersionLine(name))
	fmt.Fprintf(stdout, "nsqlookupd tcp=%s http=%s\n", lookupdTCP, lookupdHTTP)
	for i := 0; i < o.nodes; i++ {
		dataPath := o.dataPath
		if o.nodes > 1 {
			dataPath = filepath.Join(o.dataPath, fmt.Sprintf("node-%d", i))
		}
		if err := os.MkdirAll(dataPath, 0o755); err != nil {
			return nil, fmt.Errorf("nsqd: create data path: %w", err)
		}
		no := nsqd.NewOptions()
		var err error
		if no.TCPAddress, err = offsetPort(o.nsqdTCP, 1000*i); err != nil {
			return nil, fmt.Errorf("--nsqd-tcp-address: %w", err)
		}
		if no.HTTPAddress, err = offsetPort(o.nsqdHTTP, 1000*i); err != nil {
			return nil, fmt.Errorf("--nsqd-http-address: %w", err)
		}
		no.HTTPSAddress = ""
		no.BroadcastAddress = o.broadcastAddress
		no.NSQLookupdTCPAddresses = []string{lookupdTCP}
		no.DataPath = dataPath
		no.MemQueueSize = o.memQueueSize
		no.Durable = o.durable
		prefix := "[nsqd] "
		if o.nodes > 1 {
			prefix = fmt.Sprintf("[nsqd-%d] ", i)
		}
		no.Logger = config.NewLogger(stderr, prefix, level)
		no.LogLevelVar = level
		no.LogLevel = config.LevelFlag{Var: level}.String()
		n, err := nsqd.New(no)
		if err != nil {
			return nil, fmt.Errorf("nsqd: %w", err)
		}
		if err := n.Start(); err != nil {
			return nil, fmt.Errorf("nsqd: %w", err)
		}
		c.nsqds = append(c.nsqds, n)
		label := "nsqd"
		if o.nodes > 1 {
			label = fmt.Sprintf("nsqd-%d", i)
		}
		fmt.Fprintf(stdout, "%s tcp=%s http=%s data=%s\n", label, dialable(n.TCPAddr()), dialable(n.HTTPAddr()), dataPath)
	}

	if o.adminHTTP != "" {
		ao := admin.NewOptions()
		ao.HTTPAddress = o.adminHTTP
		ao.NSQLookupdHTTPAddresses = []string{lookupdHTTP}
		ao.Logger = config.NewLogger(stderr, "[nsqadmin] ", level)
		ao.LogLevel = level
		a, err := admin.New(ao)
		if err != nil {
			return nil, fmt.Errorf("nsqadmin: %w", err)
		}
		if err := a.Start(); err != nil {
			return nil, fmt.Errorf("nsqadmin: %w", err)
		}
		c.admin = a
		fmt.Fprintf(stdout, "nsqadmin http=%s\n", dialable(a.HTTPAddr()))
	}
	fmt.Fprintln(stdout, "sluice ready; Ctrl-C to stop")
	ok = true
	return c, nil
}
