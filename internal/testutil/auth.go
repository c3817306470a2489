package testutil

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Authorization is one entry of an auth server answer (protocol.md §12.2).
type Authorization struct {
	Topic       string   `json:"topic"`
	Channels    []string `json:"channels"`
	Permissions []string `json:"permissions"`
}

// AuthResponse is the JSON an auth server answers with (protocol.md §12.2).
type AuthResponse struct {
	TTL            int             `json:"ttl"`
	Identity       string          `json:"identity"`
	IdentityURL    string          `json:"identity_url"`
	Authorizations []Authorization `json:"authorizations"`
}

// AuthServer is a real HTTP auth server on 127.0.0.1 answering GET /auth
// according to the secrets registered with Allow. Unknown secrets get 403.
type AuthServer struct {
	// Addr is "127.0.0.1:port", the value for nsqd's --auth-http-address.
	Addr string

	srv *http.Server
	mu  sync.Mutex
	// answers maps a secret to its answer; guarded by mu.
	answers map[string]AuthResponse
	// requests records every query received; guarded by mu.
	requests []url.Values
}

// StartAuthServer starts an AuthServer; it is shut down when the test ends.
func StartAuthServer(t testing.TB) *AuthServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("auth server listen: %v", err)
	}
	a := &AuthServer{Addr: ln.Addr().String(), answers: make(map[string]AuthResponse)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth", a.serveAuth)
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("auth server: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.srv.Shutdown(ctx)
		<-done
	})
	return a
}

// Allow registers the answer given to secret.
func (a *AuthServer) Allow(secret string, resp AuthResponse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answers[secret] = resp
}

// Deny removes secret's answer: later requests with it get 403.
func (a *AuthServer) Deny(secret string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.answers, secret)
}

// Requests returns a copy of the query parameters of every request received.
func (a *AuthServer) Requests() []url.Values {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]url.Values(nil), a.requests...)
}

func (a *AuthServer) serveAuth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a.mu.Lock()
	a.requests = append(a.requests, q)
	resp, ok := a.answers[q.Get("secret")]
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"message":"NOT_AUTHORIZED"}`))
		return
	}
	json.NewEncoder(w).Encode(resp)
}
