package lookupd

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// lookupCache keeps the encoded /lookup answer of each topic asked for,
// for as long as the registry does not change and the answer's time limit
// (a producer turning inactive, a tombstone ending) is not reached: a
// client polling /lookup, as every nsqd consumer does, costs a map read
// instead of sorting, copying and encoding the registration each time.
// Any change of the registry drops every entry (the next lookup of each
// topic rebuilds its own), which also bounds the cache to the topics that
// exist.
type lookupCache struct {
	mu      sync.RWMutex
	gen     uint64
	entries map[string]*lookupEntry
}

// lookupEntry is one topic's /lookup 200 answer.
type lookupEntry struct {
	until         time.Time // zero: no time limit
	body          []byte
	contentLength []string // len(body) as a header value
}

// get returns the answer of topic if it was built at generation gen and
// still holds at now.
func (c *lookupCache) get(topic []byte, gen uint64, now time.Time) *lookupEntry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.gen != gen {
		return nil
	}
	e := c.entries[string(topic)] // no allocation for a map index
	if e == nil || (!e.until.IsZero() && !now.Before(e.until)) {
		return nil
	}
	return e
}

func (c *lookupCache) put(topic string, gen uint64, e *lookupEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case gen < c.gen:
		return // built from an older registry than the entries now here
	case gen > c.gen || c.entries == nil:
		c.gen, c.entries = gen, make(map[string]*lookupEntry)
	}
	c.entries[topic] = e
}

// lookup returns the /lookup answer of topic at now, from the cache or
// built and cached; nil if the topic is not registered.
func (d *Daemon) lookup(topic string, now time.Time) (*lookupEntry, error) {
	if e := d.lookups.get([]byte(topic), d.registry.gen.Load(), now); e != nil {
		return e, nil
	}
	a := d.registry.lookupAt(topic, now)
	if !a.found {
		return nil, nil
	}
	producers := make([]producerJSON, len(a.producers))
	for i := range a.producers {
		producers[i] = toProducerJSON(&a.producers[i])
	}
	body, err := json.Marshal(struct {
		Channels  []string       `json:"channels"`
		Producers []producerJSON `json:"producers"`
	}{a.channels, producers})
	if err != nil {
		return nil, fmt.Errorf("encode /lookup answer of %q: %w", topic, err)
	}
	e := &lookupEntry{until: a.until, body: body, contentLength: []string{strconv.Itoa(len(body))}}
	d.lookups.put(topic, a.gen, e)
	return e, nil
}
