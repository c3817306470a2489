package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// ScenarioCreateChannels creates topics and channels over HTTP from one
// client, one request after the other.
const ScenarioCreateChannels = "create-channels"

// CreateOptions sizes create-channels: Topics topics with ChannelsPerTopic
// channels each.
type CreateOptions struct {
	Topics, ChannelsPerTopic int
}

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
	err := o.withNodeConfig(ctx, l, NodeConfig{MemQueueSize: idleChannelsMemQueue}, func(n *Node) error {
		r.Config = fmt.Sprintf("%d topics x %d channels, POST /topic/create then /channel/create per channel, one client, one request at a time; --mem-queue-size=%d; %s",
			co.Topics, co.ChannelsPerTopic, idleChannelsMemQueue, n.Note)
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
		return checkCreated(body, co.Topics, co.ChannelsPerTopic)
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
