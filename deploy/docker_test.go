package deploy_test

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerfile returns the Dockerfile's instructions of one kind (e.g. "CMD"),
// each with its arguments (line continuations are not used in our file).
func dockerfile(t testing.TB, instr string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, instr+" ") {
			out = append(out, strings.TrimSpace(line[len(instr):]))
		}
	}
	return out
}

// lastStage returns the instructions of one kind in the final stage only.
func lastStage(t testing.TB, instr string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.LastIndex(text, "\nFROM ")
	if i < 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	var out []string
	for _, line := range strings.Split(text[i:], "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, instr+" ") {
			out = append(out, strings.TrimSpace(line[len(instr):]))
		}
	}
	return out
}

// appNames lists the commands under apps/.
func appNames(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(repoRoot, "apps"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(repoRoot, "apps", e.Name(), "main.go")); err == nil {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestDockerfileBuildsStaticBinaries checks the build stage: Go 1.26 image,
// CGO_ENABLED=0 build of ./apps/..., one static binary per command, all copied
// to /usr/local/bin of a static runtime image.
func TestDockerfileBuildsStaticBinaries(t *testing.T) {
	froms := dockerfile(t, "FROM")
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:1.26 ") {
		t.Errorf("FROM lines %q, want a golang:1.26 build stage and a runtime stage", froms)
	}
	if len(froms) == 2 && !strings.Contains(froms[1], "distroless/static") && !strings.Contains(froms[1], "alpine") {
		t.Errorf("runtime stage %q is neither distroless/static nor alpine", froms[1])
	}
	if !slices.Contains(buildArgs, "CGO_ENABLED=0") || !slices.Contains(buildArgs, "./apps/...") {
		t.Errorf("build command %q does not build ./apps/... with CGO_ENABLED=0", buildArgs)
	}
	_, _, outDir, err := dockerBuildCommand()
	if err != nil {
		t.Fatal(err)
	}
	copied := false
	for _, c := range lastStage(t, "COPY") {
		f := strings.Fields(c)
		if len(f) >= 3 && f[0] == "--from=build" && f[len(f)-2] == outDir && f[len(f)-1] == "/usr/local/bin/" {
			copied = true
		}
	}
	if !copied {
		t.Errorf("runtime stage does not COPY --from=build %s /usr/local/bin/", outDir)
	}

	apps := appNames(t)
	for _, want := range []string{"nsqd", "nsqlookupd", "nsqadmin"} {
		if !slices.Contains(apps, want) {
			t.Errorf("apps/%s missing", want)
		}
	}
	for _, name := range apps {
		f, err := elf.Open(bin(name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked (has an ELF interpreter); the runtime image has no libc", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s imports shared libraries %v", name, libs)
		}
		if f.Section(".debug_info") != nil {
			t.Errorf("%s has DWARF data; the build should strip it (-ldflags=-s -w)", name)
		}
		f.Close()
	}
}

// TestDockerfileExposesDefaultPorts checks EXPOSE against the default ports
// the binaries actually listen on (from their -h output).
func TestDockerfileExposesDefaultPorts(t *testing.T) {
	var exposed []int
	for _, e := range lastStage(t, "EXPOSE") {
		for _, f := range strings.Fields(e) {
			p, err := strconv.Atoi(strings.TrimSuffix(f, "/tcp"))
			if err != nil {
				t.Fatalf("EXPOSE %q: %v", f, err)
			}
			exposed = append(exposed, p)
		}
	}
	slices.Sort(exposed)
	re := regexp.MustCompile(`\(default "0\.0\.0\.0:(\d+)"\)`)
	var defaults []int
	for _, name := range []string{"nsqd", "nsqlookupd", "nsqadmin"} {
		out, _ := runBinary(name, "-h")
		ms := re.FindAllStringSubmatch(out, -1)
		if len(ms) == 0 {
			t.Errorf("%s -h shows no default listen address:\n%s", name, out)
		}
		for _, m := range ms {
			p, _ := strconv.Atoi(m[1])
			defaults = append(defaults, p)
		}
	}
	slices.Sort(defaults)
	want := []int{4150, 4151, 4152, 4160, 4161, 4171}
	if !slices.Equal(defaults, want) {
		t.Errorf("binaries' default ports %v, want NSQ's %v", defaults, want)
	}
	if !slices.Equal(exposed, defaults) {
		t.Errorf("EXPOSE %v, binaries listen by default on %v", exposed, defaults)
	}
	if v := lastStage(t, "VOLUME"); len(v) != 1 || v[0] != "/data" {
		t.Errorf("VOLUME %q, want /data", v)
	}
	if u := lastStage(t, "USER"); len(u) != 1 || strings.HasPrefix(u[0], "0") || strings.HasPrefix(u[0], "root") {
		t.Errorf("USER %q, want a non-root user", u)
	}
}

// runBinary runs a built binary to completion and returns its combined output.
func runBinary(name string, args ...string) (string, error) {
	out, err := exec.Command(bin(name), args...).CombinedOutput()
	return string(out), err
}

// defaultCommand returns the image's CMD (exec form) and fails if there is
// an ENTRYPOINT (the documented usage relies on the first word naming the
// binary).
func defaultCommand(t testing.TB) []string {
	t.Helper()
	if ep := lastStage(t, "ENTRYPOINT"); len(ep) != 0 {
		t.Fatalf("ENTRYPOINT %q: the image is documented as 'docker run IMAGE <binary> [flags]'", ep)
	}
	cmds := lastStage(t, "CMD")
	if len(cmds) != 1 {
		t.Fatalf("want one CMD, got %q", cmds)
	}
	var argv []string
	if err := json.Unmarshal([]byte(cmds[0]), &argv); err != nil {
		t.Fatalf("CMD %s is not in exec (JSON) form: %v", cmds[0], err)
	}
	return argv
}

// TestDockerfileDefaultCommand runs the image's default command line (with
// the volume replaced by a temp dir, and listeners on 127.0.0.1 ephemeral
// ports so the test shares the machine), checks /ping, and checks that state
// written to the volume survives a stop (SIGTERM, as docker stop sends) and a
// new start.
func TestDockerfileDefaultCommand(t *testing.T) {
	argv := defaultCommand(t)
	if len(argv) == 0 || argv[0] != "nsqd" {
		t.Fatalf("CMD %q, want nsqd first", argv)
	}
	if !slices.Contains(argv, "--data-path=/data") {
		t.Fatalf("CMD %q does not use the /data volume", argv)
	}
	if wd := lastStage(t, "WORKDIR"); len(wd) != 1 || wd[0] != "/data" {
		t.Errorf("runtime WORKDIR %q, want /data", wd)
	}
	data := t.TempDir()
	args := make([]string, 0, len(argv)+3)
	for _, a := range argv[1:] {
		args = append(args, strings.ReplaceAll(a, "=/data", "="+data))
	}
	args = append(args, "--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0", "--https-address=127.0.0.1:0")

	d := startDaemon(t, argv[0], args...)
	httpAddr, _ := d.httpAddr(t, 2)
	if body := mustGet(t, "http://"+httpAddr+"/ping", nil); body != "OK" {
		t.Fatalf("/ping = %q", body)
	}
	var info struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(mustGet(t, "http://"+httpAddr+"/info", nil)), &info); err != nil || info.Version != "1.3.0" {
		t.Fatalf("/info version %q (%v)", info.Version, err)
	}
	mustPost(t, "http://"+httpAddr+"/topic/create?topic=docker", nil)
	mustPost(t, "http://"+httpAddr+"/channel/create?topic=docker&channel=ch", nil)
	for range 3 {
		mustPost(t, "http://"+httpAddr+"/pub?topic=docker", []byte("persist me"))
	}
	if err := d.stop(); err != nil {
		t.Fatalf("nsqd stop: %v\n%s", err, d.out.String())
	}
	if _, err := os.Stat(filepath.Join(data, "nsqd.dat")); err != nil {
		t.Fatalf("no nsqd.dat in the volume after stop: %v", err)
	}

	d2 := startDaemon(t, argv[0], args...)
	httpAddr, _ = d2.httpAddr(t, 2)
	var stats struct {
		Topics []struct {
			TopicName string `json:"topic_name"`
			Channels  []struct {
				ChannelName string `json:"channel_name"`
				Depth       int64  `json:"depth"`
			} `json:"channels"`
		} `json:"topics"`
	}
	body := mustGet(t, "http://"+httpAddr+"/stats?format=json&topic=docker", nil)
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatalf("/stats: %v", err)
	}
	if len(stats.Topics) != 1 || len(stats.Topics[0].Channels) != 1 || stats.Topics[0].Channels[0].Depth != 3 {
		t.Fatalf("after restart on the same volume, /stats = %s; want topic docker with channel ch at depth 3", body)
	}
}

// TestDockerignoreKeepsSources checks that .dockerignore leaves out what the
// build does not need but keeps every input of the build.
func TestDockerignoreKeepsSources(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimPrefix(line, "/"))
		}
	}
	excluded := func(path string) bool {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, path); ok {
				return true
			}
			if strings.HasPrefix(path, p+"/") {
				return true
			}
		}
		return false
	}
	keep := []string{"go.mod", "go.sum", "apps", "internal", "protocol", "nsqd", "lookupd", "admin", "clients", "admin/ui/static"}
	for _, k := range keep {
		if excluded(k) {
			t.Errorf(".dockerignore excludes %s, which the build needs", k)
		}
	}
	for _, drop := range []string{".git", "bin", "testoutput", "admin/ui/node_modules"} {
		if !excluded(drop) {
			t.Errorf(".dockerignore keeps %s in the build context", drop)
		}
	}
}
