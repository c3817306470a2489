package testutil

import (
	"fmt"
	"testing"
	"time"
)

// PollInterval is how often WaitFor re-evaluates its condition.
const PollInterval = 10 * time.Millisecond

// WaitFor polls cond every PollInterval until it returns true, failing the
// test (t.Fatalf) if that has not happened within timeout. what describes the
// awaited state in the failure message; it may use fmt verbs with args.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	if !Eventually(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprintf(what, args...))
	}
}

// Eventually polls cond every PollInterval and reports whether it returned
// true within timeout. Use it where a test wants to handle the failure itself.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(PollInterval)
	}
}
