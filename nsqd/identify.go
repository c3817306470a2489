package nsqd

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"time"
	"unique"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/snappy"

	"github.com/sluicemq/sluice/protocol"
)

// identifyRequest is the IDENTIFY body (§4.1). Typed fields make a value of
// the wrong JSON type a decode error, as the reference does.
type identifyRequest struct {
	ClientID            string `json:"client_id"`
	Hostname            string `json:"hostname"`
	UserAgent           string `json:"user_agent"`
	FeatureNegotiation  bool   `json:"feature_negotiation"`
	HeartbeatInterval   int    `json:"heartbeat_interval"`
	OutputBufferSize    int    `json:"output_buffer_size"`
	OutputBufferTimeout int    `json:"output_buffer_timeout"`
	TLSv1               bool   `json:"tls_v1"`
	Snappy              bool   `json:"snappy"`
	Deflate             bool   `json:"deflate"`
	DeflateLevel        int    `json:"deflate_level"`
	SampleRate          int32  `json:"sample_rate"`
	MsgTimeout          int    `json:"msg_timeout"`
}

// identifyResponse is the feature negotiation reply, keys in the reference
// order (§4.2).
type identifyResponse struct {
	MaxRdyCount         int64  `json:"max_rdy_count"`
	Version             string `json:"version"`
	MaxMsgTimeout       int64  `json:"max_msg_timeout"`
	MsgTimeout          int64  `json:"msg_timeout"`
	TLSv1               bool   `json:"tls_v1"`
	Deflate             bool   `json:"deflate"`
	DeflateLevel        int    `json:"deflate_level"`
	MaxDeflateLevel     int    `json:"max_deflate_level"`
	Snappy              bool   `json:"snappy"`
	SampleRate          int32  `json:"sample_rate"`
	AuthRequired        bool   `json:"auth_required"`
	OutputBufferSize    int    `json:"output_buffer_size"`
	OutputBufferTimeout int64  `json:"output_buffer_timeout"`
}

func (c *client) identify() ([]byte, error) {
	if c.state.Load() != stateInit {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "cannot IDENTIFY in current state")
	}
	o := c.nsqd.opts
	body, err := c.readSizedBody("IDENTIFY", protocol.ErrBadBody, o.MaxBodySize,
		"failed to read body size", "body too big", "invalid body size", "failed to read body")
	if err != nil {
		return nil, err
	}
	var req identifyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY failed to decode JSON body")
	}

	heartbeat := c.heartbeat()
	switch hb := req.HeartbeatInterval; {
	case hb == -1:
		heartbeat = 0
	case hb == 0:
	case hb >= 1000 && time.Duration(hb)*time.Millisecond <= o.MaxHeartbeatInterval:
		heartbeat = time.Duration(hb) * time.Millisecond
	default:
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY heartbeat interval (%d) is invalid", hb)
	}
	bufSize, bufTO := c.outputBufSize, c.outputBufTO
	switch to := req.OutputBufferTimeout; {
	case to == -1:
		bufTO = 0
	case to == 0:
	case time.Duration(to)*time.Millisecond >= o.MinOutputBufferTimeout && time.Duration(to)*time.Millisecond <= o.MaxOutputBufferTimeout:
		bufTO = time.Duration(to) * time.Millisecond
	default:
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY output buffer timeout (%d) is invalid", to)
	}
	switch sz := req.OutputBufferSize; {
	case sz == -1:
		bufSize, bufTO = 1, 0
	case sz == 0:
	case sz >= 64 && int64(sz) <= o.MaxOutputBufferSize:
		bufSize = sz
	default:
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY output buffer size (%d) is invalid", sz)
	}
	if req.SampleRate < 0 || req.SampleRate > 99 {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY sample rate (%d) is invalid", req.SampleRate)
	}
	msgTimeout := c.msgTimeout
	switch mt := req.MsgTimeout; {
	case mt == 0:
	case mt >= 1000 && time.Duration(mt)*time.Millisecond <= o.MaxMsgTimeout:
		msgTimeout = time.Duration(mt) * time.Millisecond
	default:
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY msg timeout (%d) is invalid", mt)
	}
	useTLS := req.TLSv1 && c.nsqd.tlsConfig != nil && req.FeatureNegotiation
	useSnappy := req.Snappy && o.SnappyEnabled && req.FeatureNegotiation
	useDeflate := req.Deflate && o.DeflateEnabled && req.FeatureNegotiation
	if useSnappy && useDeflate {
		return nil, protocol.Fatalf(protocol.ErrIdentifyFailed, "cannot enable both deflate and snappy compression")
	}
	level := 6
	if useDeflate && req.DeflateLevel > 0 {
		level = req.DeflateLevel
	}
	if level > o.MaxDeflateLevel {
		level = o.MaxDeflateLevel
	}

	c.writeMu.Lock() // the heartbeat timer and the writers read these
	c.heartbeatNs.Store(int64(heartbeat))
	c.outputBufSize, c.outputBufTO = bufSize, bufTO
	if heartbeat == 0 {
		c.clearWriteDeadlineLocked() // no deadlines without heartbeats (§3.16)
	}
	c.writeMu.Unlock()
	c.msgTimeout, c.sampleRate = msgTimeout, req.SampleRate
	id := c.ident()
	id.clientID, id.hostname, id.userAgent = unique.Make(req.ClientID), unique.Make(req.Hostname), unique.Make(req.UserAgent)
	c.identity.Store(&id)
	c.nsqd.connTimers.start(c)

	if !req.FeatureNegotiation {
		return protocol.OK, nil
	}
	reply := jsonBytes(identifyResponse{
		MaxRdyCount:         o.MaxRdyCount,
		Version:             Version,
		MaxMsgTimeout:       int64(o.MaxMsgTimeout / time.Millisecond),
		MsgTimeout:          int64(msgTimeout / time.Millisecond),
		TLSv1:               useTLS,
		Deflate:             useDeflate,
		DeflateLevel:        level,
		MaxDeflateLevel:     o.MaxDeflateLevel,
		Snappy:              useSnappy,
		SampleRate:          req.SampleRate,
		AuthRequired:        len(o.AuthHTTPAddresses) > 0,
		OutputBufferSize:    bufSize,
		OutputBufferTimeout: int64(bufTO / time.Millisecond),
	})
	// The reply and the upgrades happen under the write lock, so that no
	// heartbeat slips out on the raw socket between the reply and the layer
	// the client now expects (TLS, then compression).
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.writeFrameLocked(protocol.FrameTypeResponse, reply); err != nil {
		return nil, err
	}
	if useTLS {
		if err := c.upgradeTLSLocked(); err != nil {
			return nil, protocol.Fatalf(protocol.ErrIdentifyFailed, "IDENTIFY failed %s", err)
		}
	}
	if useSnappy {
		c.upgradeCompressionLocked(func(r io.Reader) io.Reader { return snappy.NewReader(r) },
			func(w io.Writer) (io.Writer, interface{ Flush() error }) {
				sw := snappy.NewBufferedWriter(w)
				return sw, sw
			})
		id := c.ident()
		id.snappy = true
		c.identity.Store(&id)
	}
	if useDeflate {
		c.upgradeCompressionLocked(func(r io.Reader) io.Reader { return flate.NewReader(r) },
			func(w io.Writer) (io.Writer, interface{ Flush() error }) {
				fw, _ := flate.NewWriter(w, level)
				return fw, fw
			})
		id := c.ident()
		id.deflate = true
		c.identity.Store(&id)
	}
	if useSnappy || useDeflate {
		if err := c.writeFrameLocked(protocol.FrameTypeResponse, protocol.OK); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// prefixConn is a net.Conn that first returns bytes already read into the
// connection's buffer, so nothing received before an upgrade is lost.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// takeBuffered returns (a copy of) the bytes read but not yet consumed.
func (r *connReader) takeBuffered() []byte {
	if r.buf == nil || r.r == r.w {
		return nil
	}
	out := bytes.Clone(r.buf[r.r:r.w])
	r.r = r.w
	return out
}

// upgradeTLSLocked runs the server side of the TLS handshake; writeMu held.
func (c *client) upgradeTLSLocked() error {
	raw := &prefixConn{Conn: c.conn, prefix: c.rd.takeBuffered()}
	tconn := tls.Server(raw, c.nsqd.tlsConfig)
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tconn.Handshake(); err != nil {
		return err
	}
	c.conn.SetDeadline(time.Time{})
	c.shedAt = 0 // the handshake's deadlines replaced any shed or write deadline
	c.wdeadline = 0
	state := tconn.ConnectionState()
	c.w = tconn
	c.rd.src = tconn
	id := c.ident()
	id.tls = &state
	c.identity.Store(&id)
	return c.writeFrameLocked(protocol.FrameTypeResponse, protocol.OK)
}

// upgradeCompressionLocked installs a decompressor on the read side and a
// compressor on the write side, on top of TLS when it is active; writeMu
// held.
func (c *client) upgradeCompressionLocked(reader func(io.Reader) io.Reader, writer func(io.Writer) (io.Writer, interface{ Flush() error })) {
	c.clearShedDeadline() // a decompressor keeps a read error for good
	under := c.rd.src
	if pre := c.rd.takeBuffered(); len(pre) > 0 {
		under = io.MultiReader(bytes.NewReader(pre), under)
	}
	c.rd.src = reader(under)
	c.w, c.flusher = writer(c.w)
}
