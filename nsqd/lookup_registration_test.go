package nsqd_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

func lookupdJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %s: %v", url, body, err)
		}
	}
	return resp.StatusCode
}

// registeredAll reports whether lookupd lists exactly topics, each with
// exactly channels, and the nsqd at tcpPort as the producer of each.
func registeredAll(t *testing.T, lookupHTTP string, topics, channels []string, tcpPort int) (bool, string) {
	var tr struct {
		Topics []string `json:"topics"`
	}
	lookupdJSON(t, lookupHTTP+"/topics", &tr)
	if !slices.Equal(tr.Topics, topics) {
		return false, fmt.Sprintf("/topics lists %d topics, want %d", len(tr.Topics), len(topics))
	}
	for _, topic := range topics {
		var lr struct {
			Channels  []string `json:"channels"`
			Producers []struct {
				TCPPort int `json:"tcp_port"`
			} `json:"producers"`
		}
		if code := lookupdJSON(t, lookupHTTP+"/lookup?topic="+topic, &lr); code != http.StatusOK {
			return false, fmt.Sprintf("/lookup?topic=%s: %d", topic, code)
		}
		if !slices.Equal(lr.Channels, channels) {
			return false, fmt.Sprintf("/lookup?topic=%s lists channels %v", topic, lr.Channels)
		}
		if len(lr.Producers) != 1 || lr.Producers[0].TCPPort != tcpPort {
			return false, fmt.Sprintf("/lookup?topic=%s lists producers %+v", topic, lr.Producers)
		}
		var cr struct {
			Channels []string `json:"channels"`
		}
		lookupdJSON(t, lookupHTTP+"/channels?topic="+topic, &cr)
		if !slices.Equal(cr.Channels, channels) {
			return false, fmt.Sprintf("/channels?topic=%s lists %v", topic, cr.Channels)
		}
	}
	return true, ""
}

// Every topic and channel created over HTTP one after the other, as fast
// as one client can, is registered with nsqlookupd over its TCP protocol:
// /topics, /channels and /lookup list all of them and nothing else, and
// deletions unregister nsqd as their producer.
func TestLookupdRegistersEveryTopicAndChannelCreatedInARow(t *testing.T) {
	const nTopics, nChannels = 200, 5
	ld := lookupdtest.Start(t, nil)
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.NSQLookupdTCPAddresses = []string{ld.TCPAddr().String()}
	})
	lookupHTTP := "http://" + ld.HTTPAddr().String()
	tcpPort, _ := strconv.Atoi(h.TCPAddr[len("127.0.0.1:"):])

	var topics, channels []string
	for c := 0; c < nChannels; c++ {
		channels = append(channels, fmt.Sprintf("c%d", c))
	}
	for i := 0; i < nTopics; i++ {
		topic := fmt.Sprintf("t%04d", i)
		topics = append(topics, topic)
		testutil.MustPost(t, h.URL("/topic/create?topic="+topic), nil)
		for _, ch := range channels {
			testutil.MustPost(t, h.URL("/channel/create?topic="+topic+"&channel="+ch), nil)
		}
	}
	waitRegistered := func(topics, channels []string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ok, why := registeredAll(t, lookupHTTP, topics, channels, tcpPort)
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("lookupd registration incomplete after 20 s: %s", why)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitRegistered(topics, channels)

	// Deleting a channel of every topic and a quarter of the topics is
	// reflected as well.
	for i, topic := range topics {
		if i%4 == 0 {
			testutil.MustPost(t, h.URL("/topic/delete?topic="+topic), nil)
			continue
		}
		testutil.MustPost(t, h.URL("/channel/delete?topic="+topic+"&channel=c0"), nil)
	}
	var kept []string
	for i, topic := range topics {
		if i%4 != 0 {
			kept = append(kept, topic)
		}
	}
	// A topic deleted on nsqd stays registered in lookupd without
	// producers (NSQ's behaviour): only its producer goes.
	var lr struct {
		Producers []json.RawMessage `json:"producers"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		lr.Producers = nil
		code := lookupdJSON(t, lookupHTTP+"/lookup?topic="+topics[0], &lr)
		if code == http.StatusOK && len(lr.Producers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted topic %s still has producers %s (%d)", topics[0], lr.Producers, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A deleted channel stays registered too (an ephemeral one would go),
	// without this nsqd as its producer: /debug lists registrations that
	// have producers.
	for {
		var dbg map[string]json.RawMessage
		lookupdJSON(t, lookupHTTP+"/debug", &dbg)
		complete := true
		for _, topic := range kept {
			if _, ok := dbg["channel:"+topic+":c0"]; ok {
				complete = false
			}
			if _, ok := dbg["channel:"+topic+":c1"]; !ok {
				t.Fatalf("channel %s:c1 lost its producer: %s", topic, dbg["channel:"+topic+":c1"])
			}
		}
		if complete {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a deleted channel c0 still has nsqd as its producer")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
