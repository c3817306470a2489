package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// upstream is the admin's HTTP client for nsqd and nsqlookupd (V1 format, §8.1 and §11).
type upstream struct {
	client *http.Client
	// long is like client with a longer bound, for the calls nsqd answers only once the nodes
	// have agreed (the replicated create, see replicaCreateTimeout).
	long *http.Client
}

func newUpstream(o *Options) (*upstream, error) {
	tlsConf := &tls.Config{InsecureSkipVerify: o.HTTPClientTLSInsecureSkipVerify} //nolint:gosec // operator's choice
	if o.HTTPClientTLSRootCAFile != "" {
		pem, err := os.ReadFile(o.HTTPClientTLSRootCAFile)
		if err != nil {
			return nil, fmt.Errorf("read --http-client-tls-root-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read --http-client-tls-root-ca-file %q: no certificates", o.HTTPClientTLSRootCAFile)
		}
		tlsConf.RootCAs = pool
	}
	if o.HTTPClientTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.HTTPClientTLSCert, o.HTTPClientTLSKey)
		if err != nil {
			return nil, fmt.Errorf("load --http-client-tls-cert/--http-client-tls-key: %w", err)
		}
		tlsConf.Certificates = []tls.Certificate{cert}
	}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: o.HTTPClientConnectTimeout}).DialContext,
		TLSClientConfig:     tlsConf,
		MaxIdleConnsPerHost: 8,
		TLSHandshakeTimeout: o.HTTPClientConnectTimeout,
		// The client's Timeout bounds the whole call; this also bounds a node that accepts
		// the connection and then never answers.
		ResponseHeaderTimeout: o.HTTPClientRequestTimeout,
		IdleConnTimeout:       90 * time.Second,
	}
	longTimeout := max(o.HTTPClientRequestTimeout, replicaCreateTimeout)
	longTransport := transport.Clone()
	longTransport.ResponseHeaderTimeout = longTimeout
	return &upstream{
		client: &http.Client{Transport: transport, Timeout: o.HTTPClientRequestTimeout},
		long:   &http.Client{Transport: longTransport, Timeout: longTimeout},
	}, nil
}

func (u *upstream) close() {
	u.client.CloseIdleConnections()
	u.long.CloseIdleConnections()
}

// statusError is a non-200 answer from an upstream daemon.
type statusError struct {
	URL    string
	Code   int
	Detail string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s: status %d %s", e.URL, e.Code, e.Detail)
}

// do sends one request to http://addr+path and decodes a JSON answer into out (when non-nil).
// A 403 carrying "https_port" (nsqd --tls-required) is retried once over HTTPS.
func (u *upstream) do(ctx context.Context, method, addr, path string, out any) error {
	return u.doWith(ctx, u.client, method, addr, path, out)
}

func (u *upstream) doWith(ctx context.Context, client *http.Client, method, addr, path string, out any) error {
	if err := checkNodeAddr(addr); err != nil {
		return err
	}
	endpoint := "http://" + addr + path
	for attempt := 0; ; attempt++ {
		body, code, err := roundTrip(ctx, client, method, endpoint)
		if err != nil {
			return err
		}
		if code == http.StatusForbidden && attempt == 0 && strings.HasPrefix(endpoint, "http://") {
			var tr struct {
				HTTPSPort int `json:"https_port"`
			}
			if json.Unmarshal(body, &tr) == nil && tr.HTTPSPort > 0 {
				host, _, _ := net.SplitHostPort(addr)
				endpoint = "https://" + net.JoinHostPort(host, strconv.Itoa(tr.HTTPSPort)) + path
				continue
			}
		}
		if code != http.StatusOK {
			return &statusError{URL: endpoint, Code: code, Detail: strings.TrimSpace(string(body))}
		}
		if out == nil || len(bytes.TrimSpace(body)) == 0 {
			return nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("decode %s: %w", endpoint, err)
		}
		return nil
	}
}

// checkNodeAddr refuses an address that is not a plain host:port: nodes register their
// own broadcast_address in nsqlookupd, and one like "evil/x?" must not redirect the admin's
// calls to another path or host.
func checkNodeAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || strings.ContainsAny(host, "/?#@\\ \t\r\n%<>\"'`{}|^") {
		return fmt.Errorf("invalid node address %q", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("invalid node address %q", addr)
	}
	return nil
}

func roundTrip(ctx context.Context, client *http.Client, method, endpoint string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, endpoint, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("build request %s %s: %w", method, endpoint, err)
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	resp, err := client.Do(req)
	if err != nil {
		// *url.Error repeats the whole URL; the caller already names the node.
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, 0, fmt.Errorf("%s %s: %w", method, req.URL.Path, ue.Err)
		}
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", endpoint, err)
	}
	return body, resp.StatusCode, nil
}

// post sends a POST action with query parameters and expects 200.
func (u *upstream) post(ctx context.Context, addr, path string, params url.Values) error {
	return u.do(ctx, http.MethodPost, addr, path+"?"+params.Encode(), nil)
}

// postLong is post with the long client.
func (u *upstream) postLong(ctx context.Context, addr, path string, params url.Values) error {
	return u.doWith(ctx, u.long, http.MethodPost, addr, path+"?"+params.Encode(), nil)
}

// isNotFound tells whether err is an upstream 404.
func isNotFound(err error) bool {
	var se *statusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}
