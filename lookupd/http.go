package lookupd

import (
	"errors"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/internal/httpv1"
	"github.com/sluicemq/sluice/protocol"
)

// producerJSON is a producer as /lookup shows it (§10.3).
type producerJSON struct {
	RemoteAddress    string `json:"remote_address"`
	Hostname         string `json:"hostname"`
	BroadcastAddress string `json:"broadcast_address"`
	TCPPort          int    `json:"tcp_port"`
	HTTPPort         int    `json:"http_port"`
	Version          string `json:"version"`
}

// nodeJSON is a producer as /nodes shows it (§10.6); Tombstones is parallel
// to Topics.
type nodeJSON struct {
	producerJSON
	Tombstones []bool   `json:"tombstones"`
	Topics     []string `json:"topics"`
}

// debugJSON is a producer as /debug shows it (§10.8); times in Unix ns.
// Keys are alphabetical like the reference's.
type debugJSON struct {
	BroadcastAddress string `json:"broadcast_address"`
	Hostname         string `json:"hostname"`
	HTTPPort         int    `json:"http_port"`
	ID               string `json:"id"`
	LastUpdate       int64  `json:"last_update"`
	TCPPort          int    `json:"tcp_port"`
	Tombstoned       bool   `json:"tombstoned"`
	TombstonedAt     int64  `json:"tombstoned_at"`
	Version          string `json:"version"`
}

func toProducerJSON(p *PeerInfo) producerJSON {
	return producerJSON{
		RemoteAddress:    p.RemoteAddress,
		Hostname:         p.Hostname,
		BroadcastAddress: p.BroadcastAddress,
		TCPPort:          p.TCPPort,
		HTTPPort:         p.HTTPPort,
		Version:          p.Version,
	}
}

var (
	errMissingTopic   = httpv1.Err{Code: http.StatusBadRequest, Text: "MISSING_ARG_TOPIC"}
	errInvalidTopic   = httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ARG_TOPIC"}
	errMissingChannel = httpv1.Err{Code: http.StatusBadRequest, Text: "MISSING_ARG_CHANNEL"}
	errInvalidChannel = httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ARG_CHANNEL"}
	errMissingNode    = httpv1.Err{Code: http.StatusBadRequest, Text: "MISSING_ARG_NODE"}
	errTopicNotFound  = httpv1.Err{Code: http.StatusNotFound, Text: "TOPIC_NOT_FOUND"}
	errChanNotFound   = httpv1.Err{Code: http.StatusNotFound, Text: "CHANNEL_NOT_FOUND"}
)

// newRouter builds the HTTP API of §10.
func (d *Daemon) newRouter() http.Handler {
	r := httpv1.NewRouter(d.logger)
	r.GET("/ping", func(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
		httpv1.PlainText(w, http.StatusOK, "OK")
	})
	r.GET("/info", httpv1.V1(d.handleInfo))
	r.GET("/metrics", d.metricsHandler())
	r.GET("/debug", httpv1.V1(d.handleDebug))
	r.GET("/lookup", d.serveLookup)
	r.GET("/topics", httpv1.V1(d.handleTopics))
	r.GET("/channels", httpv1.V1(d.handleChannels))
	r.GET("/nodes", httpv1.V1(d.handleNodes))
	r.POST("/topic/create", httpv1.V1(d.handleCreateTopic))
	r.POST("/topic/delete", httpv1.V1(d.handleDeleteTopic))
	r.POST("/channel/create", httpv1.V1(d.handleCreateChannel))
	r.POST("/channel/delete", httpv1.V1(d.handleDeleteChannel))
	r.POST("/topic/tombstone", httpv1.V1(d.handleTombstone))

	// pprof: the index at /debug/pprof and every profile under it.
	// httprouter cannot mix static and parameter segments, so one handler
	// dispatches the named endpoints.
	r.HandlerFunc(http.MethodGet, "/debug/pprof", pprof.Index)
	pprofByName := func(w http.ResponseWriter, req *http.Request, ps httprouter.Params) {
		switch ps.ByName("name") {
		case "cmdline":
			pprof.Cmdline(w, req)
		case "profile":
			pprof.Profile(w, req)
		case "symbol":
			pprof.Symbol(w, req)
		case "trace":
			pprof.Trace(w, req)
		default:
			pprof.Index(w, req)
		}
	}
	r.GET("/debug/pprof/:name", pprofByName)
	r.POST("/debug/pprof/:name", pprofByName)
	return r
}

func (d *Daemon) handleInfo(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
	return struct {
		Version string `json:"version"`
	}{config.Version}, nil
}

// topicParam returns the first topic query value; validate also checks the
// name rules. Like the reference, only an absent parameter is "missing": a
// present but empty one ("?topic=") is the name "" (not found by /lookup,
// no channels, INVALID_ARG_TOPIC where names are validated).
func topicParam(req *http.Request, validate bool) (string, error) {
	q, err := httpv1.Query(req)
	if err != nil {
		return "", httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_REQUEST"}
	}
	if !q.Has("topic") {
		return "", errMissingTopic
	}
	topic := q.Get("topic")
	if validate && !protocol.IsValidTopicName(topic) {
		return "", errInvalidTopic
	}
	return topic, nil
}

// topicChannelParams returns validated topic and channel query values.
func topicChannelParams(req *http.Request) (string, string, error) {
	topic, err := topicParam(req, true)
	if err != nil {
		return "", "", err
	}
	q, _ := httpv1.Query(req) // parsed successfully by topicParam
	if !q.Has("channel") {
		return "", "", errMissingChannel
	}
	channel := q.Get("channel")
	if !protocol.IsValidChannelName(channel) {
		return "", "", errInvalidChannel
	}
	return topic, channel, nil
}

// Header values of a /lookup answer, shared by every answer (net/http
// only reads them).
var (
	headerNSQV1    = []string{httpv1.NSQContentTypeV1}
	headerJSONType = []string{"application/json; charset=utf-8"}
)

// serveLookup answers /lookup (§10.3) from the cache of encoded answers
// (see lookupCache), in the V1 format.
func (d *Daemon) serveLookup(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
	topic, err := topicParam(req, false)
	if err != nil {
		var e httpv1.Err
		if !errors.As(err, &e) {
			e = httpv1.Err{Code: http.StatusInternalServerError, Text: "INTERNAL_ERROR"}
		}
		httpv1.WriteError(w, e.Code, e.Text)
		return
	}
	e, err := d.lookup(topic, time.Now())
	if err != nil {
		d.logger.Error("HTTP: /lookup", "topic", topic, "err", err)
		httpv1.WriteError(w, http.StatusInternalServerError, "INTERNAL_ERROR")
		return
	}
	if e == nil {
		httpv1.WriteError(w, errTopicNotFound.Code, errTopicNotFound.Text)
		return
	}
	h := w.Header()
	h["X-Nsq-Content-Type"] = headerNSQV1 // httpv1.HeaderNSQContentType, canonical
	h["Content-Type"] = headerJSONType
	h["Content-Length"] = e.contentLength
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(e.body)
}

func (d *Daemon) handleTopics(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
	return struct {
		Topics []string `json:"topics"`
	}{d.registry.Topics()}, nil
}

func (d *Daemon) handleChannels(_ http.ResponseWriter, req *http.Request, _ httprouter.Params) (any, error) {
	topic, err := topicParam(req, false)
	if err != nil {
		return nil, err
	}
	return struct {
		Channels []string `json:"channels"`
	}{d.registry.Channels(topic)}, nil
}

func (d *Daemon) handleNodes(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
	nodes := d.registry.Nodes(time.Now())
	out := make([]nodeJSON, len(nodes))
	for i := range nodes {
		out[i] = nodeJSON{
			producerJSON: toProducerJSON(&nodes[i].PeerInfo),
			Tombstones:   nodes[i].Tombstones,
			Topics:       nodes[i].Topics,
		}
	}
	return struct {
		Producers []nodeJSON `json:"producers"`
	}{out}, nil
}

func (d *Daemon) handleDebug(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
	regs := d.registry.Debug()
	out := make(map[string][]debugJSON, len(regs))
	for k, ps := range regs {
		list := make([]debugJSON, len(ps))
		for i, p := range ps {
			list[i] = debugJSON{
				ID:               p.ID,
				Hostname:         p.Hostname,
				BroadcastAddress: p.BroadcastAddress,
				TCPPort:          p.TCPPort,
				HTTPPort:         p.HTTPPort,
				Version:          p.Version,
				LastUpdate:       p.LastUpdate.UnixNano(),
				Tombstoned:       p.Tombstoned,
				TombstonedAt:     p.TombstonedAt.UnixNano(),
			}
		}
		out[k] = list
	}
	return out, nil
}

func (d *Daemon) handleCreateTopic(_ http.ResponseWriter, req *http.Request, _ httprouter.Params) (any, error) {
	topic, err := topicParam(req, true)
	if err != nil {
		return nil, err
	}
	d.logger.Info("DB: adding topic", "topic", topic)
	d.registry.CreateTopic(topic)
	return nil, nil
}

func (d *Daemon) handleDeleteTopic(_ http.ResponseWriter, req *http.Request, _ httprouter.Params) (any, error) {
	topic, err := topicParam(req, false)
	if err != nil {
		return nil, err
	}
	d.logger.Info("DB: removing topic", "topic", topic)
	d.registry.DeleteTopic(topic)
	return nil, nil
}

func (d *Daemon) handleCreateChannel(_ http.ResponseWriter, req *http.Request, _ httprouter.Params) (any, error) {
	topic, channel, err := topicChannelParams(req)
	if err != nil {
		return nil, err
	}
	d.logger.Info("DB: adding channel", "topic", topic, "channel", channel)
	d.registry.CreateChannel(topic, channel)
	return nil, nil
}

func (d *Daemon) handleDeleteChannel(_ http.ResponseWriter, req *http.Request, _ httprouter.Params) (any, error) {
	topic, channel, err := topicChannelParams(req)
	if err != nil {
		return nil, err
	}
	if !d.registry.DeleteChannel(topic, channel) {
		return nil, errChanNotFound
	}
	d.logger.Info("DB: removed channel", "topic", topic, "channel", channel)
	return nil, nil
}

func (d *Daemon) handleTombstone(_ http.ResponseWriter, req *http.Request, _ httprouter.Params) (any, error) {
	topic, err := topicParam(req, false)
	if err != nil {
		return nil, err
	}
	q, _ := httpv1.Query(req) // parsed successfully by topicParam
	if !q.Has("node") {
		return nil, errMissingNode
	}
	node := q.Get("node")
	n := d.registry.Tombstone(topic, node, time.Now())
	d.logger.Info("DB: tombstoned topic producer", "topic", topic, "node", node, "matched", n)
	return nil, nil
}
