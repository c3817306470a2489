package bench

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSourceAddrMovesToTheNextLoopbackAddress(t *testing.T) {
	for _, tc := range []struct {
		i, perSource int
		want         string // "" for the kernel's choice
	}{
		{0, 20, ""},
		{19, 20, ""},
		{20, 20, "127.0.0.2"},
		{45, 20, "127.0.0.3"},
		{27_231, 27_232, ""},
		{27_232, 27_232, "127.0.0.2"},
		{300 * 20, 20, "127.0.1.45"}, // past 127.0.0.255
	} {
		got := sourceAddr(tc.i, tc.perSource)
		if (got == nil) != (tc.want == "") || (got != nil && !got.IP.Equal(net.ParseIP(tc.want))) {
			t.Errorf("sourceAddr(%d, %d) = %v, want %q", tc.i, tc.perSource, got, tc.want)
		}
	}
}

// The memory statistics come from the comment lines Go's heap profile
// handler writes; the pairs ("Stack = inuse / sys") become two keys.
func TestDaemonMemStatsParsesTheHeapProfileComments(t *testing.T) {
	const page = `heap profile: 1: 2 [3: 4] @ heap/1048576
1: 2 [3: 4] @ 0x1 0x2

# runtime.MemStats
# Alloc = 1000
# HeapAlloc = 1000
# HeapIdle = 5000
# HeapInuse = 2000
# HeapReleased = 4000
# Stack = 65536 / 65536
# MSpan = 100 / 200
# OtherSys = 300
# NumGC = 7
# DebugGC = false
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/heap" || r.URL.Query().Get("debug") != "1" || r.URL.Query().Has("gc") {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(page))
	}))
	defer srv.Close()
	m, err := DaemonMemStats(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"HeapAlloc": 1000, "HeapIdle": 5000, "HeapInuse": 2000, "HeapReleased": 4000,
		"StackInuse": 65536, "StackSys": 65536, "MSpanInuse": 100, "MSpanSys": 200, "OtherSys": 300, "NumGC": 7}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, m[k], v, m)
		}
	}
	before := map[string]int64{"HeapInuse": 1000, "HeapIdle": 1000, "HeapReleased": 1000, "StackInuse": 32768, "OtherSys": 100, "MSpanSys": 100}
	b := memBreakdown(before, m, 4)
	if b["heap_inuse"] != 250 || b["heap_idle_retained"] != 250 || b["stack_inuse"] != 8192 || b["other_sys"] != 50 || b["gc_and_runtime_meta"] != 25 {
		t.Errorf("breakdown %v", b)
	}
}
