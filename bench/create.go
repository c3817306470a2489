package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/lookupd"
)

// ScenarioCreateChannels creates topics and channels over HTTP from one
// client, one request after the other.
const ScenarioCreateChannels = "create-channels"

// CreateOptions sizes create-channels: Topics topics with ChannelsPerTopic
// channels each.
type CreateOptions struct {
	Topics, ChannelsPerTopic int
	// Lookupd registers the node (a child process) with an nsqlookupd in
	// the bench process and checks, after the creations, that every topic
	// and channel got registered there.
	Lookupd bool
}

// createRegistrationLimit bounds the wait for nsqlookupd to list every
// created topic and channel after the last creation.
const createRegistrationLimit = 60 * time.Second

// createTopicPrefix names the topics of create-channels (bench_ so that an
// external node is cleaned up after the scenario).
const createTopicPrefix = "bench_create_"

// RunCreateChannels creates o.Create.Topics topics (POST /topic/create)
// each with o.Create.ChannelsPerTopic channels (POST /channel/create), one
// request at a time on one keep-alive connection, on a fresh node with
// nsqd's default --mem-queue-size (NSQ 1.3.0 allocates a Go channel of that
// many slots per topic and channel). The figure is channels created per
// second over the whole run, topic creations included in the time; then
// one GET /stats must list every topic and channel.
func RunCreateChannels(ctx context.Context, l Launcher, o Options) Result {
	co := o.Create
	r := Result{Scenario: ScenarioCreateChannels, Target: l.Name()}
	if co.Topics < 1 || co.ChannelsPerTopic < 1 {
		r.Error = fmt.Sprintf("%d topics x %d channels: nothing to create", co.Topics, co.ChannelsPerTopic)
		return r
	}
	channels := int64(co.Topics) * int64(co.ChannelsPerTopic)
	cfg := NodeConfig{MemQueueSize: idleChannelsMemQueue}
	var lookupdHTTP string
	if _, isProcess := l.(*BinaryLauncher); isProcess && co.Lookupd {
		lk, err := startBenchLookupd()
		if err != nil {
			r.Error = err.Error()
			return r
		}
		defer lk.Exit()
		cfg.LookupdTCPAddresses = []string{lk.TCPAddr().String()}
		lookupdHTTP = lk.HTTPAddr().String()
	}
	err := o.withNodeConfig(ctx, l, cfg, func(n *Node) error {
		registration := "no nsqlookupd"
		if lookupdHTTP != "" {
			registration = "registered with an nsqlookupd in the bench process, which must list every topic and channel afterwards"
		}
		r.Config = fmt.Sprintf("%d topics x %d channels, POST /topic/create then /channel/create per channel, one client, one request at a time; %s; --mem-queue-size=%d; %s",
			co.Topics, co.ChannelsPerTopic, registration, idleChannelsMemQueue, n.Note)
		var created atomic.Int64
		stop := o.progressFor(r.Scenario+"@"+l.Name(), channels, created.Load)
		cpu := startCPUMeter(n)
		start := time.Now()
		for t := 0; t < co.Topics; t++ {
			topic := createTopicPrefix + IdleTopicName(t, co.Topics)
			if err := httpPost(ctx, n.HTTPAddr, "/topic/create", url.Values{"topic": {topic}}); err != nil {
				stop()
				return err
			}
			for c := 0; c < co.ChannelsPerTopic; c++ {
				q := url.Values{"topic": {topic}, "channel": {IdleChannelName(c, co.ChannelsPerTopic)}}
				if err := httpPost(ctx, n.HTTPAddr, "/channel/create", q); err != nil {
					stop()
					return err
				}
				created.Add(1)
			}
		}
		elapsed := time.Since(start)
		stop()
		cpu.report(&r, channels, "channel")
		r.setRate(channels, elapsed, 0)
		r.extra("topics", co.Topics)
		r.extra("channels_per_topic", co.ChannelsPerTopic)
		r.extra("requests", int64(co.Topics)+channels)
		r.extra("projected_100k_seconds", roundTo(100_000/(float64(channels)/elapsed.Seconds()), 2))
		d, body, err := timeStats(ctx, n.HTTPAddr)
		if err != nil {
			return err
		}
		r.extra("stats_seconds", roundTo(d.Seconds(), 4))
		if err := checkCreated(body, co.Topics, co.ChannelsPerTopic); err != nil {
			return err
		}
		if lookupdHTTP == "" {
			return nil
		}
		after, err := waitLookupdRegistered(ctx, lookupdHTTP, co.Topics, co.ChannelsPerTopic)
		r.extra("lookupd_complete_after_seconds", roundTo(after.Seconds(), 3))
		return err
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// checkCreated checks that a /stats answer lists every topic and channel
// create-channels created (other topics are ignored).
func checkCreated(statsJSON []byte, topics, channelsPerTopic int) error {
	var doc struct {
		Topics []TopicStats `json:"topics"`
	}
	if err := json.Unmarshal(statsJSON, &doc); err != nil {
		return fmt.Errorf("decode /stats: %w", err)
	}
	want := make(map[string]bool, topics)
	for t := 0; t < topics; t++ {
		want[createTopicPrefix+IdleTopicName(t, topics)] = true
	}
	var found, channels int
	for _, t := range doc.Topics {
		if !strings.HasPrefix(t.Name, createTopicPrefix) {
			continue
		}
		if !want[t.Name] {
			return fmt.Errorf("/stats lists topic %q, not created", t.Name)
		}
		delete(want, t.Name)
		found++
		names := make(map[string]bool, len(t.Channels))
		for _, c := range t.Channels {
			names[c.Name] = true
		}
		for c := 0; c < channelsPerTopic; c++ {
			if names[IdleChannelName(c, channelsPerTopic)] {
				channels++
			}
		}
	}
	if found != topics || channels != topics*channelsPerTopic {
		return fmt.Errorf("/stats lists %d of %d topics and %d of %d channels created", found, topics, channels, topics*channelsPerTopic)
	}
	return nil
}

// startBenchLookupd starts Sluice's nsqlookupd in the bench process on
// free 127.0.0.1 ports.
func startBenchLookupd() (*lookupd.Daemon, error) {
	lo := lookupd.NewOptions()
	lo.TCPAddress, lo.HTTPAddress, lo.BroadcastAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
	lo.Logger = slog.New(slog.DiscardHandler)
	lk, err := lookupd.New(lo)
	if err != nil {
		return nil, fmt.Errorf("nsqlookupd: %w", err)
	}
	if err := lk.Start(); err != nil {
		return nil, fmt.Errorf("nsqlookupd: %w", err)
	}
	return lk, nil
}

// waitLookupdRegistered polls nsqlookupd until /topics lists every topic
// create-channels created and /channels every channel of each, and
// returns how long that took.
func waitLookupdRegistered(ctx context.Context, httpAddr string, topics, channelsPerTopic int) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, createRegistrationLimit)
	defer cancel()
	var lastTopics, lastChannels int
	next := 0 // topics before this one have every channel registered
	for {
		var doc struct {
			Topics   []string `json:"topics"`
			Channels []string `json:"channels"`
		}
		err := lookupdGet(ctx, httpAddr, "/topics", &doc)
		if err == nil {
			lastTopics = 0
			for _, t := range doc.Topics {
				if strings.HasPrefix(t, createTopicPrefix) {
					lastTopics++
				}
			}
		}
		for err == nil && lastTopics == topics && next < topics {
			doc.Channels = nil
			err = lookupdGet(ctx, httpAddr, "/channels?topic="+url.QueryEscape(createTopicPrefix+IdleTopicName(next, topics)), &doc)
			if err != nil || len(doc.Channels) != channelsPerTopic {
				break
			}
			next++
		}
		lastChannels = next * channelsPerTopic
		if lastTopics == topics && next == topics {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("nsqlookupd lists %d of %d topics, %d topics with all %d channels: registration incomplete after %s",
				lastTopics, topics, lastChannels/max(channelsPerTopic, 1), channelsPerTopic, createRegistrationLimit)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lookupdGet decodes the JSON answer of an nsqlookupd GET.
func lookupdGet(ctx context.Context, httpAddr, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
