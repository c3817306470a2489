package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type countingHandler struct{ calls atomic.Int64 }

func (h *countingHandler) HandleRequest(ctx context.Context, from uint64, kind string, body []byte) ([]byte, error) {
	h.calls.Add(1)
	if kind == "fail" {
		return nil, errors.New("refused: " + string(body))
	}
	return append([]byte(kind+":"), body...), nil
}

// muxNode wires a RequestMux to a memNet node.
func muxNode(t *testing.T, net *memNet, id uint64, h RequestHandler) *RequestMux {
	t.Helper()
	m := NewRequestMux(memTransport{net: net, from: id}, id)
	m.SetHandler(h)
	mn := &memNode{id: id, net: net, inbox: make(chan []Envelope, 1024), done: make(chan struct{})}
	mn.serve(m)
	net.mu.Lock()
	net.nodes[id] = mn
	net.mu.Unlock()
	t.Cleanup(func() {
		close(mn.done)
		mn.wg.Wait()
		m.Close()
	})
	return m
}

func TestRequestsOverALossyLinkAreAnsweredAndRunOnce(t *testing.T) {
	net := newMemNet(9)
	net.drop = 0.4
	h := &countingHandler{}
	a := muxNode(t, net, 1, &countingHandler{})
	muxNode(t, net, 2, h)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			body := fmt.Sprint(i)
			got, err := a.Request(ctx, 2, "echo", []byte(body))
			if err != nil || string(got) != "echo:"+body {
				t.Errorf("request %d: %q %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	if n := h.calls.Load(); n != 50 {
		t.Fatalf("handler ran %d times for 50 requests sent again over a lossy link", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := a.Request(ctx, 2, "fail", []byte("x"))
	var re *RemoteError
	if !errors.As(err, &re) || re.Msg != "refused: x" {
		t.Fatalf("a handler's error reached the caller as %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := a.Request(ctx2, 99, "echo", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request to a node that does not exist: %v, want the deadline", err)
	}
}
