package nsqd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// authorization is one entry of an auth server's answer (§12.2).
type authorization struct {
	topic     *regexp.Regexp
	channels  []*regexp.Regexp
	subscribe bool
	publish   bool
}

// authState is a connection's authorization, owned by its reader goroutine.
type authState struct {
	secret         []byte
	authed         bool
	expires        time.Time
	identity       string
	identityURL    string
	authorizations []authorization
}

type authResponse struct {
	TTL            int    `json:"ttl"`
	Identity       string `json:"identity"`
	IdentityURL    string `json:"identity_url"`
	Authorizations []struct {
		Topic       string   `json:"topic"`
		Channels    []string `json:"channels"`
		Permissions []string `json:"permissions"`
	} `json:"authorizations"`
}

func (c *client) authCmd(nparams int) ([]byte, error) {
	if c.state.Load() != stateInit {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "cannot AUTH in current state")
	}
	if nparams != 1 {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "AUTH invalid number of parameters")
	}
	secret, err := c.readSizedBody("AUTH", protocol.ErrBadBody, c.nsqd.opts.MaxBodySize,
		"failed to read body size", "body too big", "invalid body size", "failed to read body")
	if err != nil {
		return nil, err
	}
	if c.auth != nil && c.auth.authed {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "AUTH already set")
	}
	if len(c.nsqd.opts.AuthHTTPAddresses) == 0 {
		return nil, protocol.Fatalf(protocol.ErrAuthDisabled, "AUTH disabled")
	}
	if c.auth == nil {
		c.auth = &authState{}
	}
	c.auth.secret = secret
	if err := c.queryAuth(); err != nil {
		c.nsqd.logger.Warn("auth failed", "client", c.remoteAddr(), "err", err)
		return nil, protocol.Fatalf(protocol.ErrAuthFailed, "AUTH failed")
	}
	if len(c.auth.authorizations) == 0 {
		return nil, protocol.Fatalf(protocol.ErrUnauthorized, "AUTH no authorizations found")
	}
	id := c.ident()
	id.authed, id.authIdentity, id.authURL = true, c.auth.identity, c.auth.identityURL
	c.identity.Store(&id)
	return jsonBytes(struct {
		Identity        string `json:"identity"`
		IdentityURL     string `json:"identity_url"`
		PermissionCount int    `json:"permission_count"`
	}{c.auth.identity, c.auth.identityURL, len(c.auth.authorizations)}), nil
}

// checkAuth enforces §12.3 for SUB and the publishing commands.
func (c *client) checkAuth(cmd, topic, channel string) error {
	if len(c.nsqd.opts.AuthHTTPAddresses) == 0 {
		return nil
	}
	if c.auth == nil || !c.auth.authed {
		return protocol.Fatalf(protocol.ErrAuthFirst, "AUTH required before %s", cmd)
	}
	if time.Now().After(c.auth.expires) {
		if err := c.queryAuth(); err != nil {
			c.nsqd.logger.Warn("auth refresh failed", "client", c.remoteAddr(), "err", err)
			return protocol.Fatalf(protocol.ErrAuthFailed, "AUTH failed")
		}
	}
	sub := cmd == "SUB"
	for _, a := range c.auth.authorizations {
		if (sub && !a.subscribe) || (!sub && !a.publish) || !a.topic.MatchString(topic) {
			continue
		}
		for _, re := range a.channels {
			if re.MatchString(channel) {
				return nil
			}
		}
	}
	return protocol.Fatalf(protocol.ErrUnauthorized, "AUTH failed for %s on %q %q", cmd, topic, channel)
}

// queryAuth asks the auth servers, starting at a random one, until one
// answers with a valid response.
func (c *client) queryAuth() error {
	addrs := c.nsqd.opts.AuthHTTPAddresses
	remoteIP := ""
	if host, _, err := net.SplitHostPort(c.remoteAddr()); err == nil {
		remoteIP = host
	}
	id := c.ident()
	commonName := ""
	if id.tls != nil && len(id.tls.PeerCertificates) > 0 {
		commonName = id.tls.PeerCertificates[0].Subject.CommonName
	}
	q := url.Values{}
	q.Set("common_name", commonName)
	q.Set("remote_ip", remoteIP)
	q.Set("secret", string(c.auth.secret))
	q.Set("tls", fmt.Sprint(id.tls != nil))
	start := rand.IntN(len(addrs))
	var lastErr error
	for i := range addrs {
		addr := addrs[(start+i)%len(addrs)]
		u := "http://" + addr + "/auth?" + q.Encode()
		if strings.Contains(addr, "://") {
			u = addr + "?" + q.Encode()
		}
		resp, err := c.nsqd.fetchAuth(u)
		if err != nil {
			lastErr = err
			continue
		}
		state, err := parseAuthResponse(resp)
		if err != nil {
			lastErr = fmt.Errorf("auth server %s: %w", addr, err)
			continue
		}
		state.secret = c.auth.secret
		c.auth = &state
		return nil
	}
	return lastErr
}

func parseAuthResponse(r *authResponse) (authState, error) {
	if r.TTL <= 0 {
		return authState{}, errors.New("ttl must be positive")
	}
	st := authState{
		authed:      true,
		expires:     time.Now().Add(time.Duration(r.TTL) * time.Second),
		identity:    r.Identity,
		identityURL: r.IdentityURL,
	}
	for _, a := range r.Authorizations {
		re, err := regexp.Compile(a.Topic)
		if err != nil {
			return authState{}, fmt.Errorf("topic pattern %q: %w", a.Topic, err)
		}
		auth := authorization{topic: re}
		for _, ch := range a.Channels {
			cre, err := regexp.Compile(ch)
			if err != nil {
				return authState{}, fmt.Errorf("channel pattern %q: %w", ch, err)
			}
			auth.channels = append(auth.channels, cre)
		}
		for _, p := range a.Permissions {
			switch p {
			case "subscribe":
				auth.subscribe = true
			case "publish":
				auth.publish = true
			default:
				return authState{}, fmt.Errorf("unknown permission %q", p)
			}
		}
		st.authorizations = append(st.authorizations, auth)
	}
	return st, nil
}

// fetchAuth performs one auth server request.
func (n *NSQD) fetchAuth(u string) (*authResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), n.opts.HTTPClientRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("build auth request: %w", err)
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	resp, err := n.httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("auth request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read auth response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("auth server answered %d: %s", resp.StatusCode, body)
	}
	var ar authResponse
	if err := json.Unmarshal(body, &ar); err != nil {
		return nil, fmt.Errorf("decode auth response: %w", err)
	}
	return &ar, nil
}
