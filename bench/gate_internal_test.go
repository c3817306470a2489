package bench

import (
	"context"
	"errors"
	"testing"
	"time"
)

// waitWaiting polls until n publishers wait at the gate.
func waitWaiting(t *testing.T, g *BacklogGate, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		w := g.waiting
		g.mu.Unlock()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d publishers wait at the gate, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A publisher waits while what it would add takes published − delivered
// over the bound, goes on once enough is delivered, and gives up when its
// context ends; a command larger than the bound passes once nothing is
// outstanding.
func TestBacklogGateBoundsPublishedMinusDelivered(t *testing.T) {
	ctx := context.Background()
	g := NewBacklogGate(1_000)
	for range 3 {
		if err := g.acquire(ctx, 300); err != nil { // 900 outstanding
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- g.acquire(ctx, 200) }() // 1,100 > 1,000: waits
	waitWaiting(t, g, 1)
	g.delivered(50) // 1,050: still waits
	select {
	case err := <-done:
		t.Fatalf("passed at 1,050 outstanding (err %v)", err)
	default:
	}
	g.delivered(50) // 1,000: fits
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g.Waits.Load() != 1 {
		t.Errorf("%d waits counted, want 1", g.Waits.Load())
	}

	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- g.acquire(cctx, 500) }()
	waitWaiting(t, g, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire after cancel: %v, want context.Canceled", err)
	}

	big := NewBacklogGate(100)
	if err := big.acquire(ctx, 200); err != nil { // nothing outstanding
		t.Fatal(err)
	}
	go func() { done <- big.acquire(ctx, 200) }()
	waitWaiting(t, big, 1)
	big.delivered(200)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
