package deploy_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// daemons are the three binaries with a systemd unit and an example config.
var daemons = []string{"nsqd", "nsqlookupd", "nsqadmin"}

// keyOverrides are the config keys that are not "flag name with - -> _"
// (protocol.md §15.2-15.4).
var keyOverrides = map[string]map[string]string{
	"nsqd": {
		"node-id":                           "id",
		"lookupd-tcp-address":               "nsqlookupd_tcp_addresses",
		"auth-http-address":                 "auth_http_addresses",
		"e2e-processing-latency-percentile": "e2e_processing_latency_percentiles",
	},
	"nsqadmin": {
		"lookupd-http-address": "nsqlookupd_http_addresses",
		"nsqd-http-address":    "nsqd_http_addresses",
		"admin-user":           "admin_users",
	},
}

// configKeys returns the config keys a daemon accepts, derived from its flags.
func configKeys(t testing.TB, name string) map[string]bool {
	t.Helper()
	keys := make(map[string]bool)
	for f := range flagNames(t, name) {
		switch f {
		case "config", "version", "verbose", "worker-id", "h", "help":
			continue
		}
		k, ok := keyOverrides[name][f]
		if !ok {
			k = strings.ReplaceAll(f, "-", "_")
		}
		keys[k] = true
	}
	return keys
}

// loadTOML decodes a config file into its keys and values.
func loadTOML(t testing.TB, path string) map[string]any {
	t.Helper()
	var m map[string]any
	if _, err := toml.DecodeFile(path, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(m) == 0 {
		t.Fatalf("%s sets no key", path)
	}
	return m
}

// checkKeysKnown fails for every key of file that the daemon does not read
// (the daemons ignore unknown keys, so a typo would go unnoticed).
func checkKeysKnown(t testing.TB, name, path string, file map[string]any) {
	t.Helper()
	known := configKeys(t, name)
	for k := range file {
		if !known[k] {
			t.Errorf("%s: key %q is not a %s config key", path, k, name)
		}
	}
}

// execStart returns the argv of a unit's ExecStart line, with the binary
// replaced by the built one's name and /etc/sluice/<x>.toml by deploy/<x>.toml.
func execStart(t testing.TB, unit string) (name string, args []string) {
	t.Helper()
	u := parseUnit(t, filepath.Join("systemd", unit+".service"))
	lines := u.values("Service", "ExecStart")
	if len(lines) != 1 {
		t.Fatalf("%s.service: want one ExecStart, got %q", unit, lines)
	}
	argv := strings.Fields(lines[0])
	if !strings.HasPrefix(argv[0], "/usr/local/bin/") {
		t.Fatalf("%s.service: ExecStart binary %q not in /usr/local/bin", unit, argv[0])
	}
	name = strings.TrimPrefix(argv[0], "/usr/local/bin/")
	for _, a := range argv[1:] {
		if strings.HasPrefix(a, "--config=/etc/sluice/") {
			abs, err := filepath.Abs(strings.TrimPrefix(a, "--config=/etc/sluice/"))
			if err != nil {
				t.Fatal(err)
			}
			a = "--config=" + abs
		}
		args = append(args, a)
	}
	return name, args
}

// TestConfigNSQD starts nsqd from its systemd ExecStart line with
// deploy/nsqd.toml (listeners and data path overridden on the command line,
// which must win over the file) and checks every key of the file through
// GET /config/<key>.
func TestConfigNSQD(t *testing.T) {
	name, args := execStart(t, "nsqd")
	if name != "nsqd" || !slices.Contains(args, "--config="+mustAbs(t, "nsqd.toml")) {
		t.Fatalf("nsqd.service ExecStart: %s %q", name, args)
	}
	checkNSQDConfigFile(t, "nsqd.toml", args)
}

func mustAbs(t testing.TB, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// checkNSQDConfigFile runs nsqd with args (which load path) plus ephemeral
// listeners and a temp data path, and compares /config/<key> with every key
// of the file.
func checkNSQDConfigFile(t *testing.T, path string, args []string) {
	t.Helper()
	file := loadTOML(t, path)
	checkKeysKnown(t, "nsqd", path, file)
	data := t.TempDir()
	overrides := map[string]string{
		"tcp_address":   "127.0.0.1:0",
		"http_address":  "127.0.0.1:0",
		"https_address": "127.0.0.1:0",
		"data_path":     data,
	}
	for k, v := range overrides {
		args = append(args, "--"+strings.ReplaceAll(k, "_", "-")+"="+v)
	}
	d := startDaemon(t, "nsqd", args...)
	httpAddr, _ := d.httpAddr(t, 2)

	keys := make([]string, 0, len(file))
	for k := range file {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := file[k]
		if v, ok := overrides[k]; ok {
			want = v // the command line beats the file
		}
		wantJSON, raw := nsqdConfigValue(t, k, want)
		code, body, err := httpGet("http://"+httpAddr+"/config/"+k, nil)
		if err != nil || code != http.StatusOK {
			t.Errorf("%s: GET /config/%s: %d %q %v", path, k, code, body, err)
			continue
		}
		if raw {
			if body != wantJSON.(string) {
				t.Errorf("%s: /config/%s = %q, want %q", path, k, body, wantJSON)
			}
			continue
		}
		var got any
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Errorf("%s: /config/%s = %q: %v", path, k, body, err)
			continue
		}
		if !reflect.DeepEqual(got, wantJSON) {
			t.Errorf("%s: /config/%s = %s, want %v (file: %v)", path, k, body, wantJSON, file[k])
		}
	}
}

// nsqdConfigValue converts a config-file value to what GET /config/<key>
// returns (§9.8): raw text for strings (raw true), JSON otherwise; durations
// in nanoseconds, log_level as its number, TLS settings as their codes.
func nsqdConfigValue(t testing.TB, key string, v any) (any, bool) {
	t.Helper()
	switch key {
	case "log_level":
		levels := map[string]float64{"debug": 1, "info": 2, "warn": 3, "error": 4, "fatal": 5}
		n, ok := levels[strings.ToLower(fmt.Sprint(v))]
		if !ok {
			t.Fatalf("log_level %v", v)
		}
		return n, false
	case "tls_min_version":
		codes := map[string]float64{"tls1.0": 769, "tls1.1": 770, "tls1.2": 771, "tls1.3": 772}
		n, ok := codes[strings.ToLower(fmt.Sprint(v))]
		if !ok {
			t.Fatalf("tls_min_version %v", v)
		}
		return n, false
	case "tls_required":
		codes := map[string]float64{"false": 0, "tcp-https": 1, "true": 2}
		return codes[strings.ToLower(fmt.Sprint(v))], false
	case "statsd_prefix":
		t.Fatalf("statsd_prefix is reported expanded; the example should leave it commented")
	}
	if s, ok := v.(string); ok {
		if d, err := time.ParseDuration(s); err == nil {
			return float64(d), false
		}
		return s, true
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out, false
}

// TestConfigNSQLookupd starts nsqlookupd from its systemd ExecStart line with
// deploy/nsqlookupd.toml and checks the file's keys: all known, and the
// broadcast address is what nsqlookupd tells nsqd in its IDENTIFY reply.
func TestConfigNSQLookupd(t *testing.T) {
	name, args := execStart(t, "nsqlookupd")
	if name != "nsqlookupd" || !slices.Contains(args, "--config="+mustAbs(t, "nsqlookupd.toml")) {
		t.Fatalf("nsqlookupd.service ExecStart: %s %q", name, args)
	}
	file := loadTOML(t, "nsqlookupd.toml")
	checkKeysKnown(t, "nsqlookupd", "nsqlookupd.toml", file)
	for _, k := range []string{"tcp_address", "http_address", "broadcast_address"} {
		if _, ok := file[k]; !ok {
			t.Errorf("nsqlookupd.toml does not set %s", k)
		}
	}
	args = append(args, "--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0")
	d := startDaemon(t, "nsqlookupd", args...)
	httpAddr, others := d.httpAddr(t, 2)
	if len(others) != 1 {
		t.Fatalf("nsqlookupd listeners: http %s, others %v", httpAddr, others)
	}
	reply := lookupdIdentify(t, others[0])
	if reply["broadcast_address"] != file["broadcast_address"] {
		t.Errorf("IDENTIFY reply broadcast_address %v, want %v from the file", reply["broadcast_address"], file["broadcast_address"])
	}
	if _, port, _ := net.SplitHostPort(httpAddr); fmt.Sprint(reply["http_port"]) != port {
		t.Errorf("IDENTIFY reply http_port %v, want %s", reply["http_port"], port)
	}
	if !strings.Contains(d.out.String(), fmt.Sprint(file["log_prefix"])) {
		t.Errorf("log lines do not carry log_prefix %q:\n%s", file["log_prefix"], d.out.String())
	}
}

// lookupdIdentify speaks the V1 protocol (§7) to a lookupd TCP address and
// returns its IDENTIFY reply.
func lookupdIdentify(t testing.TB, addr string) map[string]any {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	body := []byte(`{"broadcast_address":"127.0.0.1","hostname":"deploy-test","tcp_port":1,"http_port":2,"version":"1.3.0"}`)
	msg := []byte("  V1IDENTIFY\n")
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(body)))
	msg = append(msg, body...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	var size uint32
	if err := binary.Read(c, binary.BigEndian, &size); err != nil {
		t.Fatalf("IDENTIFY reply: %v", err)
	}
	resp := make([]byte, size)
	if _, err := io.ReadFull(c, resp); err != nil {
		t.Fatalf("IDENTIFY reply: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(resp, &m); err != nil {
		t.Fatalf("IDENTIFY reply %q: %v", resp, err)
	}
	return m
}

// TestConfigNSQAdmin starts nsqadmin from its systemd ExecStart line with
// deploy/nsqadmin.toml and checks the file's keys through /config (reachable
// thanks to the file's allow_config_from_cidr) and the admin user settings.
func TestConfigNSQAdmin(t *testing.T) {
	name, args := execStart(t, "nsqadmin")
	if name != "nsqadmin" || !slices.Contains(args, "--config="+mustAbs(t, "nsqadmin.toml")) {
		t.Fatalf("nsqadmin.service ExecStart: %s %q", name, args)
	}
	file := loadTOML(t, "nsqadmin.toml")
	checkKeysKnown(t, "nsqadmin", "nsqadmin.toml", file)
	args = append(args, "--http-address=127.0.0.1:0")
	d := startDaemon(t, "nsqadmin", args...)
	httpAddr, _ := d.httpAddr(t, 1)
	base := "http://" + httpAddr

	var lookupds []string
	if err := json.Unmarshal([]byte(mustGet(t, base+"/config/nsqlookupd_http_addresses", nil)), &lookupds); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, a := range file["nsqlookupd_http_addresses"].([]any) {
		want = append(want, a.(string))
	}
	if !slices.Equal(lookupds, want) {
		t.Errorf("/config/nsqlookupd_http_addresses = %q, want %q", lookupds, want)
	}
	if lvl := mustGet(t, base+"/config/log_level", nil); strings.Trim(lvl, "\"\n") != file["log_level"] {
		t.Errorf("/config/log_level = %q, want %v", lvl, file["log_level"])
	}

	header := fmt.Sprint(file["acl_http_header"])
	admins := file["admin_users"].([]any)
	if len(admins) == 0 {
		t.Fatal("nsqadmin.toml: admin_users is empty")
	}
	type settings struct {
		User    string `json:"user"`
		IsAdmin bool   `json:"is_admin"`
	}
	get := func(user string) settings {
		var s settings
		body := mustGet(t, base+"/api/settings", map[string]string{header: user})
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("/api/settings %q: %v", body, err)
		}
		return s
	}
	if s := get(admins[0].(string)); !s.IsAdmin || s.User != admins[0] {
		t.Errorf("/api/settings as %v (%s header): %+v, want an admin", admins[0], header, s)
	}
	if s := get("mallory"); s.IsAdmin {
		t.Errorf("/api/settings as mallory: %+v, want not an admin", s)
	}
}

// TestSystemdCluster starts the three daemons from their units' ExecStart
// lines and example configs, wired to each other on ephemeral ports, and
// checks that a topic published on nsqd shows up in nsqlookupd and nsqadmin.
func TestSystemdCluster(t *testing.T) {
	_, largs := execStart(t, "nsqlookupd")
	l := startDaemon(t, "nsqlookupd", append(largs, "--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0", "--broadcast-address=127.0.0.1")...)
	lHTTP, lTCP := l.httpAddr(t, 2)

	_, nargs := execStart(t, "nsqd")
	n := startDaemon(t, "nsqd", append(nargs, "--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0", "--https-address=127.0.0.1:0",
		"--data-path="+t.TempDir(), "--broadcast-address=127.0.0.1", "--lookupd-tcp-address="+lTCP[0])...)
	nHTTP, nTCP := n.httpAddr(t, 2)

	_, aargs := execStart(t, "nsqadmin")
	a := startDaemon(t, "nsqadmin", append(aargs, "--http-address=127.0.0.1:0", "--lookupd-http-address="+lHTTP)...)
	aHTTP, _ := a.httpAddr(t, 1)

	mustPost(t, "http://"+nHTTP+"/pub?topic=deploy_smoke", []byte("hello"))
	_, nTCPPort, _ := net.SplitHostPort(nTCP[0])
	waitFor(t, 15*time.Second, func() bool {
		code, body, err := httpGet("http://"+lHTTP+"/lookup?topic=deploy_smoke", nil)
		if err != nil || code != http.StatusOK {
			return false
		}
		var r struct {
			Producers []struct {
				TCPPort int `json:"tcp_port"`
			} `json:"producers"`
		}
		return json.Unmarshal([]byte(body), &r) == nil && len(r.Producers) == 1 && fmt.Sprint(r.Producers[0].TCPPort) == nTCPPort
	}, "nsqlookupd to list the nsqd as producer of deploy_smoke")
	waitFor(t, 15*time.Second, func() bool {
		_, body, err := httpGet("http://"+aHTTP+"/api/topics", nil)
		var r struct {
			Topics []string `json:"topics"`
		}
		return err == nil && json.Unmarshal([]byte(body), &r) == nil && slices.Contains(r.Topics, "deploy_smoke")
	}, "nsqadmin to list deploy_smoke")

	// Orderly shutdown, as systemctl stop does: every daemon exits 0 on SIGTERM.
	for _, d := range []*daemon{a, n, l} {
		if err := d.stop(); err != nil {
			t.Errorf("%s: %v\n%s", d.name, err, d.out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(n.dataPath(t), "nsqd.dat")); err != nil {
		t.Errorf("nsqd wrote no nsqd.dat on SIGTERM: %v", err)
	}
}

// dataPath returns the --data-path argument of a daemon.
func (d *daemon) dataPath(t testing.TB) string {
	t.Helper()
	p := ""
	for _, a := range d.cmd.Args[1:] {
		if v, ok := strings.CutPrefix(a, "--data-path="); ok {
			p = v // the last one wins, as with flag
		}
	}
	if p == "" {
		t.Fatalf("%s has no --data-path", d.name)
	}
	return p
}
