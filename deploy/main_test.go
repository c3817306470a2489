package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the module root (tests run in deploy/).
const repoRoot = ".."

// binDir holds the binaries TestMain builds the way the Dockerfile does.
var binDir string

// buildArgs is the Dockerfile's build command after "RUN", as parsed by
// dockerBuildCommand (kept for the Dockerfile tests).
var buildArgs []string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-deploy-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if err := buildLikeDockerfile(dir); err != nil {
		fmt.Fprintln(os.Stderr, "deploy tests: building like the Dockerfile:", err)
		return 1
	}
	return m.Run()
}

// dockerfileBuild matches the Dockerfile's build step.
var dockerfileBuild = regexp.MustCompile(`(?m)^RUN\s+(CGO_ENABLED=0\s+go\s+build\s.*)$`)

// dockerBuildCommand returns the environment assignments and the command of
// the Dockerfile's "RUN CGO_ENABLED=0 go build ..." line, and its -o directory.
func dockerBuildCommand() (env, argv []string, outDir string, err error) {
	df, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		return nil, nil, "", err
	}
	ms := dockerfileBuild.FindAllStringSubmatch(string(df), -1)
	if len(ms) != 1 {
		return nil, nil, "", fmt.Errorf("want exactly one 'RUN CGO_ENABLED=0 go build' line in the Dockerfile, found %d", len(ms))
	}
	words, err := shellWords(ms[0][1])
	if err != nil {
		return nil, nil, "", fmt.Errorf("Dockerfile build line: %w", err)
	}
	for len(words) > 0 && strings.Contains(words[0], "=") {
		env = append(env, words[0])
		words = words[1:]
	}
	for i, w := range words {
		if w == "-o" && i+1 < len(words) {
			outDir = words[i+1]
		}
	}
	if outDir == "" {
		return nil, nil, "", errors.New("Dockerfile build line has no -o <dir>")
	}
	return env, words, outDir, nil
}

// buildLikeDockerfile runs the Dockerfile's build command in the repository
// root with its environment, writing the binaries to dir instead of its -o
// directory.
func buildLikeDockerfile(dir string) error {
	env, argv, outDir, err := dockerBuildCommand()
	if err != nil {
		return err
	}
	buildArgs = append(append([]string(nil), env...), argv...)
	args := make([]string, len(argv))
	for i, a := range argv {
		if a == outDir {
			a = dir + string(os.PathSeparator)
		}
		args[i] = a
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// shellWords splits a shell command line into words, honouring single and
// double quotes and backslash escapes (enough for Dockerfile RUN lines).
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == ';' || c == '&' || c == '|' || c == '>' || c == '<' || c == '`' || c == '$':
			return nil, fmt.Errorf("shell syntax %q not supported in the build line", c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// bin returns the path of a built binary.
func bin(name string) string { return filepath.Join(binDir, name) }

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// daemon is a running binary started by startDaemon; it is stopped with
// SIGTERM when the test ends.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	out     *lockedBuffer
	exited  chan struct{}
	waitErr error
}

// startDaemon runs the built binary name with args.
func startDaemon(t testing.TB, name string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, out: &lockedBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(bin(name), args...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("%s: %v\noutput:\n%s", name, err, d.out.String())
		}
	})
	return d
}

// stop sends SIGTERM and waits (bounded) for a clean exit. It is idempotent.
func (d *daemon) stop() error {
	select {
	case <-d.exited:
		return d.exitError()
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-d.exited:
		return d.exitError()
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return errors.New("did not exit within 30s of SIGTERM")
	}
}

func (d *daemon) exitError() error {
	if d.waitErr != nil {
		return fmt.Errorf("exited with %v", d.waitErr)
	}
	return nil
}

// ports waits until the process listens on at least n TCP ports and returns
// them (sorted). Ports are read from /proc: the daemon listens on ":0" and
// reports nothing else about them.
func (d *daemon) ports(t testing.TB, n int) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-d.exited:
			t.Fatalf("%s exited before listening (%v); output:\n%s", d.name, d.waitErr, d.out.String())
		default:
		}
		ps, err := listeningPorts(d.cmd.Process.Pid)
		if err != nil {
			t.Fatalf("%s: listening ports: %v", d.name, err)
		}
		if len(ps) >= n {
			return ps
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: listening on %v after 20s, want %d ports; output:\n%s", d.name, ps, n, d.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// httpAddr returns "127.0.0.1:<port>" of the one listener (out of n) that
// answers GET /ping with 200 OK; the others speak the TCP protocols.
func (d *daemon) httpAddr(t testing.TB, n int) (httpAddr string, others []string) {
	t.Helper()
	for _, p := range d.ports(t, n) {
		addr := "127.0.0.1:" + strconv.Itoa(p)
		if code, body, err := httpGet("http://"+addr+"/ping", nil); err == nil && code == http.StatusOK && body == "OK" {
			httpAddr = addr
			continue
		}
		others = append(others, addr)
	}
	if httpAddr == "" {
		t.Fatalf("%s: no listener answers GET /ping; output:\n%s", d.name, d.out.String())
	}
	return httpAddr, others
}

// listeningPorts returns the TCP ports pid listens on, from its open socket
// inodes and /proc/<pid>/net/tcp{,6}.
func listeningPorts(pid int) ([]int, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	inodes := make(map[string]bool)
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") && strings.HasSuffix(link, "]") {
			inodes[link[len("socket:["):len(link)-1]] = true
		}
	}
	seen := make(map[int]bool)
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			port, err := strconv.ParseUint(fields[1][i+1:], 16, 16)
			if err == nil {
				seen[int(port)] = true
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	ports := make([]int, 0, len(seen))
	for p := range seen {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	return ports, nil
}

var httpClient = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// httpGet fetches url with extra headers and returns status and body.
func httpGet(url string, header map[string]string) (int, string, error) {
	return httpDo(http.MethodGet, url, nil, header)
}

func httpDo(method, url string, body []byte, header map[string]string) (int, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, "", err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// mustGet fetches url and fails unless the status is 200.
func mustGet(t testing.TB, url string, header map[string]string) string {
	t.Helper()
	code, body, err := httpGet(url, header)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %q", url, code, body)
	}
	return body
}

// mustPost posts body to url and fails unless the status is 200.
func mustPost(t testing.TB, url string, body []byte) {
	t.Helper()
	code, resp, err := httpDo(http.MethodPost, url, body, nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	if code != http.StatusOK {
		t.Fatalf("POST %s: %d %q", url, code, resp)
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// flagNames returns the flags a built binary accepts, from its -h output.
func flagNames(t testing.TB, name string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(bin(name), "-h").CombinedOutput() // -h exits 0 or 2 depending on the flag package mode
	flags := make(map[string]bool)
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 5 {
		t.Fatalf("%s -h: found only %d flags in:\n%s", name, len(flags), out)
	}
	return flags
}
