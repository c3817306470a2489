package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/toolstest"
)

// TestAuditToNSQThenTailN: lines written to the to_nsq binary's stdin are
// read back by nsq_tail --n through nsqlookupd, exactly and in order.
func TestAuditToNSQThenTailN(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "to_nsq")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/sluicemq/sluice/apps/to_nsq").CombinedOutput(); err != nil {
		t.Fatalf("go build to_nsq: %v\n%s", err, out)
	}
	c := toolstest.StartCluster(t, 1, nil)
	h := c.NSQDs[0]
	want := seq("line-", 120)
	cmd := exec.Command(bin, "--topic", "roundtrip", "--nsqd-tcp-address", h.TCPAddr)
	cmd.Stdin = strings.NewReader(strings.Join(want, "\n") + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("to_nsq: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("to_nsq did not exit at EOF\n%s", stderr.String())
	}
	c.WaitLookup(t, "roundtrip", 1)

	code, out, errOut := toolstest.RunSync(t, 30*time.Second, run, nil,
		"--topic", "roundtrip", "--channel", "tail", "--n", "120", "--lookupd-http-address", c.LookupdHTTP)
	if code != 0 {
		t.Fatalf("nsq_tail exit %d: %s", code, errOut)
	}
	if out != strings.Join(want, "\n")+"\n" {
		got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		t.Fatalf("nsq_tail printed %d lines (first %q), want the %d lines written", len(got), got[:min(3, len(got))], len(want))
	}
}
