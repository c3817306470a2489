package clients

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// NewHTTPClient returns the HTTP client the tools use towards nsqd and
// nsqlookupd: connectTimeout bounds the dial, requestTimeout the whole
// request (NSQ's --http-client-connect-timeout / --http-client-request-timeout).
func NewHTTPClient(connectTimeout, requestTimeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = requestTimeout
	return &http.Client{Transport: tr, Timeout: requestTimeout}
}

// HTTPURL turns "host:port" or a full URL plus a path and query into a URL.
func HTTPURL(addr, pathAndQuery string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/") + pathAndQuery
}

// GetJSON GETs url with NSQ's V1 Accept header and decodes a 200 response
// into v. Any other status is an error carrying the status and body.
func GetJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	resp, err := hc.Do(req)
	if err != nil {
		return err // already names the method and URL
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("GET %s: read body: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: got response %s %q", u, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: decode JSON: %w", u, err)
	}
	return nil
}

// Producer is one nsqd as nsqlookupd's /lookup reports it.
type Producer struct {
	RemoteAddress    string `json:"remote_address"`
	Hostname         string `json:"hostname"`
	BroadcastAddress string `json:"broadcast_address"`
	TCPPort          int    `json:"tcp_port"`
	HTTPPort         int    `json:"http_port"`
	Version          string `json:"version"`
}

// HTTPAddress is broadcast_address:http_port.
func (p Producer) HTTPAddress() string {
	return net.JoinHostPort(p.BroadcastAddress, strconv.Itoa(p.HTTPPort))
}

// TCPAddress is broadcast_address:tcp_port.
func (p Producer) TCPAddress() string {
	return net.JoinHostPort(p.BroadcastAddress, strconv.Itoa(p.TCPPort))
}

// LookupProducers asks every lookupd in addrs for the producers of topic
// (GET /lookup) and returns their union, de-duplicated by HTTP address and
// sorted. It fails only when no lookupd answered; a lookupd that does not
// know the topic (404) counts as an answer with no producers unless all of
// them say so, in which case the error says TOPIC_NOT_FOUND.
func LookupProducers(ctx context.Context, hc *http.Client, addrs []string, topic string) ([]Producer, error) {
	var errs []error
	answered := false
	seen := make(map[string]Producer)
	for _, a := range addrs {
		var resp struct {
			Producers []Producer `json:"producers"`
			Data      *struct {
				Producers []Producer `json:"producers"`
			} `json:"data"`
		}
		err := GetJSON(ctx, hc, HTTPURL(a, "/lookup?topic="+url.QueryEscape(topic)), &resp)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		answered = true
		ps := resp.Producers
		if len(ps) == 0 && resp.Data != nil {
			ps = resp.Data.Producers
		}
		for _, p := range ps {
			seen[p.HTTPAddress()] = p
		}
	}
	if !answered {
		return nil, fmt.Errorf("failed to query any nsqlookupd: %w", errors.Join(errs...))
	}
	out := make([]Producer, 0, len(seen))
	for _, p := range seen {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].HTTPAddress() < out[j].HTTPAddress() })
	return out, nil
}

// LookupTopics returns the union of GET /topics over every lookupd in addrs,
// sorted. It fails only when no lookupd answered.
func LookupTopics(ctx context.Context, hc *http.Client, addrs []string) ([]string, error) {
	var errs []error
	answered := false
	seen := make(map[string]bool)
	for _, a := range addrs {
		var resp struct {
			Topics []string `json:"topics"`
		}
		if err := GetJSON(ctx, hc, HTTPURL(a, "/topics"), &resp); err != nil {
			errs = append(errs, err)
			continue
		}
		answered = true
		for _, t := range resp.Topics {
			seen[t] = true
		}
	}
	if !answered {
		return nil, fmt.Errorf("failed to query any nsqlookupd: %w", errors.Join(errs...))
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out, nil
}
