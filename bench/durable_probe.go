package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The instruments of the durable scenarios: the durable counters of
// /metrics, an fdatasync probe on the node's disk, and single PUB round
// trips on one connection.

// metricsCounters reads nsqd_durable_syncs_total and
// nsqd_durable_bytes_written_total from /metrics (0 while no durable topic
// exists: nsqd registers them with the first one).
func metricsCounters(ctx context.Context, httpAddr string) (syncs, bytes float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "nsqd_durable_syncs_total":
			syncs = v
		case "nsqd_durable_bytes_written_total":
			bytes = v
		}
	}
	return syncs, bytes, sc.Err()
}

// syncMeter records the durable counters around a measured phase.
type syncMeter struct {
	ctx      context.Context
	addr     string
	s0, b0   float64
	start    time.Time
	disabled bool
}

func startSyncMeter(ctx context.Context, addr string) *syncMeter {
	m := &syncMeter{ctx: ctx, addr: addr, start: time.Now()}
	var err error
	if m.s0, m.b0, err = metricsCounters(ctx, addr); err != nil {
		m.disabled = true
	}
	return m
}

// report adds fsyncs_per_sec, bytes_per_msg and msgs_per_fsync for msgs
// messages handled since the meter started.
func (m *syncMeter) report(r *Result, msgs int64) {
	if m.disabled {
		return
	}
	s1, b1, err := metricsCounters(m.ctx, m.addr)
	if err != nil {
		return
	}
	el := time.Since(m.start).Seconds()
	r.extra("fsyncs_per_sec", round((s1-m.s0)/el))
	if msgs > 0 {
		r.extra("bytes_per_msg", round((b1-m.b0)/float64(msgs)))
		r.extra("msgs_per_fsync", round(float64(msgs)/max(s1-m.s0, 1)))
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// measureFsync appends size bytes and fdatasyncs, n times, to a file in dir
// and returns the time of each append+fdatasync.
func measureFsync(dir string, size, n int) ([]time.Duration, error) {
	path := filepath.Join(dir, "bench-fsync.tmp")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, size)
	out := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return nil, fmt.Errorf("fsync probe: %w", err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return nil, fmt.Errorf("fsync probe: fdatasync %s: %w", path, err)
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

// pubRoundTrips sends n PUBs one at a time on one connection and returns
// each round trip (PUB written to OK read).
func pubRoundTrips(ctx context.Context, addr, topic string, size, n int) ([]time.Duration, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	cmd := []byte("  V2PUB " + topic + "\n")
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(size))
	cmd = append(cmd, make([]byte, size)...)
	first := cmd
	cmd = cmd[4:]
	rd := bufio.NewReader(c)
	hdr := make([]byte, 8)
	body := make([]byte, 0, 64)
	out := make([]time.Duration, 0, n)
	for i := range n {
		t := time.Now()
		w := cmd
		if i == 0 {
			w = first
		}
		if _, err := c.Write(w); err != nil {
			return out, err
		}
		for {
			if _, err := io.ReadFull(rd, hdr); err != nil {
				return out, err
			}
			size := binary.BigEndian.Uint32(hdr)
			if size < 4 || size > 1<<20 {
				return out, fmt.Errorf("PUB answered a frame of %d bytes", size)
			}
			body = slices.Grow(body[:0], int(size-4))[:size-4]
			if _, err := io.ReadFull(rd, body); err != nil {
				return out, err
			}
			if string(body) == "_heartbeat_" {
				if _, err := c.Write([]byte("NOP\n")); err != nil {
					return out, err
				}
				continue
			}
			if binary.BigEndian.Uint32(hdr[4:]) != 0 || string(body) != "OK" {
				return out, fmt.Errorf("PUB answered %q", body)
			}
			break
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}
