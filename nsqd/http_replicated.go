package nsqd

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/sluicemq/sluice/replica"
)

// stepDownTimeout bounds how long /topic/step-down waits for the new
// leader.
const stepDownTimeout = 10 * time.Second

// doTopicStepDown is POST /topic/step-down?topic=T[&to=ADDR] (Sluice): the
// replicated topic's leader hands its leadership to another replica (to,
// a replica's broadcast_address:tcp_port as /stats names leaders; by
// default the one least behind), as before taking the leader's node down
// for maintenance. Any replica takes the request; a follower without to
// asks for itself. It answers {"leader": ADDR} once a new leader is
// elected: the replica asked, unless it handed the leadership on at once
// (a replica still copying the messages a restore skipped does).
func (n *NSQD) doTopicStepDown(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	q, name, err := topicParam(r)
	if err != nil {
		return nil, err
	}
	cl := n.cluster.Load()
	var a replica.Assignment
	ok := false
	if cl != nil {
		a, ok = cl.Assignment(name)
	}
	if !ok {
		if _, exists := n.ExistingTopic(name); exists {
			return nil, errf(http.StatusBadRequest, "NOT_REPLICATED: topic "+name+" is not replicated; only a replicated topic has a leader")
		}
		return nil, errf(http.StatusNotFound, "TOPIC_NOT_FOUND")
	}
	var to uint64
	if addr := q.Get("to"); addr != "" {
		if to, ok = cl.Member(name, addr); !ok {
			return nil, errf(http.StatusBadRequest, "INVALID_ARG_TO: "+addr+" holds no replica of "+name+"; its replicas: "+memberAddrs(cl, a))
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), stepDownTimeout)
	defer cancel()
	to, err = cl.TransferLeader(ctx, name, to)
	switch {
	case errors.Is(err, replica.ErrUnknownTopic):
		return nil, errf(http.StatusBadRequest, "NOT_A_REPLICA: this node holds no replica of "+name+"; ask one of "+memberAddrs(cl, a))
	case errors.Is(err, replica.ErrNotMember):
		return nil, errf(http.StatusBadRequest, "INVALID_ARG_TO: "+err.Error())
	case err != nil:
		return nil, errf(http.StatusServiceUnavailable, "STEP_DOWN_FAILED: "+err.Error())
	}
	return map[string]string{"leader": cl.Addr(to)}, nil
}

// memberAddrs lists a topic's replicas by address.
func memberAddrs(cl *replica.Cluster, a replica.Assignment) string {
	addrs := make([]string, 0, len(a.Members))
	for _, m := range a.Members {
		addrs = append(addrs, cl.Addr(m))
	}
	return strings.Join(addrs, ", ")
}
