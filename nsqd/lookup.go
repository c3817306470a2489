package nsqd

import (
	"net"
	"os"
	"strconv"

	"github.com/sluicemq/sluice/internal/lookupclient"
	"github.com/sluicemq/sluice/protocol"
)

// startLookup starts the registration connections to nsqlookupd (§7.3).
func (n *NSQD) startLookup() {
	o := n.opts
	hostname, _ := os.Hostname()
	ident := protocol.LookupIdentify{
		BroadcastAddress: o.BroadcastAddress,
		Hostname:         hostname,
		TCPPort:          n.broadcastTCPPort(),
		HTTPPort:         n.broadcastHTTPPort(),
		Version:          Version,
	}
	n.lookup = lookupclient.New(lookupclient.Config{
		Addresses:    o.NSQLookupdTCPAddresses,
		Identify:     ident,
		Snapshot:     n.registrations,
		Logger:       n.logger.With("component", "lookup"),
		PingInterval: o.LookupdPingInterval,
		MaxReplySize: int32(o.MaxBodySize),
		HTTPClient:   n.httpClient,
	})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.lookup.Run(n.ctx)
	}()
}

func portOf(a net.Addr) int {
	if a == nil {
		return -1
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.Port
	}
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return -1
	}
	port, _ := strconv.Atoi(p)
	return port
}

func (n *NSQD) broadcastTCPPort() int {
	if n.opts.BroadcastTCPPort != 0 {
		return n.opts.BroadcastTCPPort
	}
	return portOf(n.TCPAddr())
}

func (n *NSQD) broadcastHTTPPort() int {
	if n.opts.BroadcastHTTPPort != 0 {
		return n.opts.BroadcastHTTPPort
	}
	return portOf(n.HTTPAddr())
}

// registrations lists every topic and channel for a full re-registration.
func (n *NSQD) registrations() []lookupclient.Registration {
	var regs []lookupclient.Registration
	for _, t := range n.topicList() {
		chans := t.channelList()
		if len(chans) == 0 {
			regs = append(regs, lookupclient.Registration{Topic: t.name})
			continue
		}
		for _, ch := range chans {
			regs = append(regs, lookupclient.Registration{Topic: t.name, Channel: ch.name})
		}
	}
	return regs
}

func (n *NSQD) notifyRegister(topic, channel string) {
	if n.lookup != nil {
		n.lookup.Register(topic, channel)
	}
}

func (n *NSQD) notifyUnregister(topic, channel string) {
	if n.lookup != nil {
		n.lookup.Unregister(topic, channel)
	}
}
