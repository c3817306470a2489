//go:build !linux

package nsqd

import (
	"errors"
	"net"
)

// idlePoller parks idle connections without a goroutine on Linux (see
// idlepoll_linux.go). Elsewhere there is none: an idle connection keeps a
// fresh reader goroutine with a small stack (see client.serve).
type idlePoller struct{}

func newIdlePoller(bool) (*idlePoller, error) {
	return nil, errors.New("parking idle connections needs epoll (Linux)")
}

func pollFD(any) int32                    { return -1 }
func (p *idlePoller) park(*client) bool   { return false }
func (p *idlePoller) unpark(*client) bool { return false }
func (p *idlePoller) run()                {}
func (p *idlePoller) stop()               {}

func writeNow(net.Conn, []byte) (int, bool) { return 0, false }

type nowWriter struct{}

func newNowWriter(net.Conn) *nowWriter                { return nil }
func (w *nowWriter) writeNow([]byte) (n int, ok bool) { return 0, false }

// canWriteNow says whether writeNow can write without blocking here.
const canWriteNow = false
