package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string // package -> binary
	errs map[string]error
}

// BuildApp builds the main package pkg (an import path such as
// "github.com/sluicemq/sluice/apps/nsqd") once per test binary and returns
// the executable's path. Call RemoveBuilds from TestMain when the tests end.
func BuildApp(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bins[pkg]; ok {
		return bin
	}
	if err, ok := builds.errs[pkg]; ok {
		t.Fatal(err)
	}
	if builds.bins == nil {
		builds.bins, builds.errs = map[string]string{}, map[string]error{}
	}
	bin, err := buildApp(pkg)
	if err != nil {
		builds.errs[pkg] = err
		t.Fatal(err)
	}
	builds.bins[pkg] = bin
	return bin
}

func buildApp(pkg string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go tool is needed to build %s for subprocess tests: %w", pkg, err)
	}
	if builds.dir == "" {
		if builds.dir, err = os.MkdirTemp("", "sluice-test-bin-"); err != nil {
			return "", err
		}
	}
	bin := filepath.Join(builds.dir, path.Base(pkg))
	if out, err := exec.Command(goBin, "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// RemoveBuilds deletes what BuildApp built.
func RemoveBuilds() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	builds.dir, builds.bins, builds.errs = "", nil, nil
}
