package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Notification is the JSON body POSTed to --notification-http-endpoint for every admin
// action (§11.4).
type Notification struct {
	Action    string `json:"action"`
	Topic     string `json:"topic"`
	Channel   string `json:"channel,omitempty"`
	Node      string `json:"node,omitempty"`
	Timestamp int64  `json:"timestamp"`
	User      string `json:"user,omitempty"`
	RemoteIP  string `json:"remote_ip"`
	UserAgent string `json:"user_agent"`
	URL       string `json:"url"`
	Via       string `json:"via"`
}

// notifier delivers notifications in order from one goroutine, so a slow endpoint never
// holds up an API request. Each POST is bounded by timeout, so a hung endpoint delays the
// next notification by at most that much. When its queue is full, notifications are
// dropped and logged.
type notifier struct {
	client   *http.Client
	endpoint string
	timeout  time.Duration
	logger   *slog.Logger
	queue    chan Notification
}

// defaultNotifyTimeout bounds a notification POST when the upstream timeouts are unset.
const defaultNotifyTimeout = 10 * time.Second

// notifyQueueLen is how many notifications may wait for delivery before new ones are dropped.
const notifyQueueLen = 256

func newNotifier(transport http.RoundTripper, endpoint string, timeout time.Duration, logger *slog.Logger) *notifier {
	if timeout <= 0 {
		timeout = defaultNotifyTimeout
	}
	return &notifier{client: &http.Client{Transport: transport, Timeout: timeout}, endpoint: endpoint, timeout: timeout,
		logger: logger, queue: make(chan Notification, notifyQueueLen)}
}

func (n *notifier) enqueue(msg Notification) {
	if n.endpoint == "" {
		return
	}
	select {
	case n.queue <- msg:
	default:
		n.logger.Warn("notification queue full, dropping", "action", msg.Action, "topic", msg.Topic)
	}
}

// run posts queued notifications until ctx ends; what is still queued then is dropped.
func (n *notifier) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-n.queue:
			if err := n.post(ctx, msg); err != nil {
				n.logger.Error("notification failed", "action", msg.Action, "topic", msg.Topic, "endpoint", n.endpoint, "err", err)
			}
		}
	}
}

func (n *notifier) post(ctx context.Context, msg Notification) error {
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode notification: %w", err)
	}
	endpoint := n.endpoint
	if !hasScheme(endpoint) {
		endpoint = "http://" + endpoint
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build notification request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("post notification: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func hasScheme(s string) bool {
	return len(s) > 7 && (s[:7] == "http://" || (len(s) > 8 && s[:8] == "https://"))
}
