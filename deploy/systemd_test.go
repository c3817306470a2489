package deploy_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unit is a parsed systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func (u unit) values(section, key string) []string { return u[section][key] }

// value returns the last value of key ("" when unset), as systemd applies it.
func (u unit) value(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parseUnit reads a unit file (no line continuations).
func parseUnit(t testing.TB, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := make(unit)
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = make(map[string][]string)
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, "\\") {
				t.Fatalf("%s:%d: cannot parse %q", path, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSystemdUnits checks each unit's command, restart and stop behaviour and
// hardening; where systemd-analyze is installed it also verifies the units
// (rewritten to run the built binaries) and scores their exposure.
func TestSystemdUnits(t *testing.T) {
	hardening := map[string]string{
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"DynamicUser":             "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectControlGroups":    "yes",
		"RestrictNamespaces":      "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"KillSignal":              "SIGTERM",
		"Restart":                 "on-failure",
		"Type":                    "simple",
	}
	for _, name := range daemons {
		u := parseUnit(t, filepath.Join("systemd", name+".service"))
		want := "/usr/local/bin/" + name + " --config=/etc/sluice/" + name + ".toml"
		if got := u.value("Service", "ExecStart"); got != want {
			t.Errorf("%s.service ExecStart=%q, want %q", name, got, want)
		}
		for k, v := range hardening {
			if vals := u.values("Service", k); len(vals) == 0 || vals[len(vals)-1] != v {
				t.Errorf("%s.service %s=%q, want %q", name, k, vals, v)
			}
		}
		if u.value("Install", "WantedBy") != "multi-user.target" {
			t.Errorf("%s.service is not WantedBy=multi-user.target", name)
		}
		if !strings.Contains(u.value("Unit", "After"), "network-online.target") {
			t.Errorf("%s.service does not start After=network-online.target", name)
		}
	}

	// nsqd's state directory is the example config's data_path.
	u := parseUnit(t, filepath.Join("systemd", "nsqd.service"))
	cfg := loadTOML(t, "nsqd.toml")
	if dir := "/var/lib/" + u.value("Service", "StateDirectory"); cfg["data_path"] != dir {
		t.Errorf("nsqd.toml data_path %v, nsqd.service StateDirectory gives %s", cfg["data_path"], dir)
	}
	if u.value("Service", "WorkingDirectory") != cfg["data_path"] {
		t.Errorf("nsqd.service WorkingDirectory %q, want the data path %v", u.value("Service", "WorkingDirectory"), cfg["data_path"])
	}

	t.Run("systemd-analyze", func(t *testing.T) {
		sa, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze not installed; the checks above still ran")
		}
		dir := t.TempDir()
		var files []string
		for _, name := range daemons {
			b, err := os.ReadFile(filepath.Join("systemd", name+".service"))
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(b), "/usr/local/bin/"+name, bin(name))
			text = strings.ReplaceAll(text, "/etc/sluice/"+name+".toml", mustAbs(t, name+".toml"))
			p := filepath.Join(dir, name+".service")
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
		}
		// verify exits 0 on unknown keys but prints them: any output fails.
		out, err := exec.Command(sa, append([]string{"verify"}, files...)...).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		for _, f := range files {
			// Exposure scores run 0 (locked down) to 10 (unprotected, 9.6 for a
			// bare service); the threshold is in tenths.
			out, err := exec.Command(sa, "security", "--offline=true", "--threshold=20", f).CombinedOutput()
			if err != nil {
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				t.Errorf("systemd-analyze security %s: %v: %s", filepath.Base(f), err, lines[len(lines)-1])
			}
		}
	})
}
