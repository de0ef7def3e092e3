package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/protocol"
)

// A loadgen client is deliberately lean: one WebSocket, one reader
// goroutine, a reused read buffer and a few counters. Writes (publishes,
// JoinGroup, pings) come from other goroutines; coder/websocket serializes
// concurrent writers. Reads and writes use context.Background() so that no
// per-call context timer is armed; closing the connection ends them.

// dialer opens SignalR JSON connections.
type dialer struct {
	header     http.Header
	negotiate  bool
	clients    []*http.Client // one per local address
	transports []*http.Transport
	next       atomic.Uint64
}

func newDialer(token string, negotiate bool, localAddrs []string) *dialer {
	d := &dialer{header: http.Header{}, negotiate: negotiate}
	if token != "" {
		d.header.Set("Authorization", "Bearer "+token)
	}
	if len(localAddrs) == 0 {
		localAddrs = []string{""}
	}
	for _, a := range localAddrs {
		nd := &net.Dialer{Timeout: 10 * time.Second}
		if a != "" {
			nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(a)}
		}
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         nd.DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		}
		d.transports = append(d.transports, tr)
		d.clients = append(d.clients, &http.Client{Transport: tr})
	}
	return d
}

// close drops idle negotiate connections (and their goroutines).
func (d *dialer) close() {
	for _, tr := range d.transports {
		tr.CloseIdleConnections()
	}
}

// dial connects to the hub at rawURL and completes the JSON handshake. It
// returns the connection and any hub messages that followed the handshake
// response in its frame.
func (d *dialer) dial(ctx context.Context, rawURL string) (*websocket.Conn, []byte, error) {
	hc := d.clients[d.next.Add(1)%uint64(len(d.clients))]
	wsURL := rawURL
	if d.negotiate {
		tok, err := d.negotiateToken(ctx, hc, rawURL)
		if err != nil {
			return nil, nil, err
		}
		wsURL = withQuery(rawURL, "id", tok)
	}
	ws, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: d.header})
	if err != nil {
		if resp != nil {
			return nil, nil, fmt.Errorf("connect %s: HTTP %d: %w", rawURL, resp.StatusCode, err)
		}
		return nil, nil, fmt.Errorf("connect %s: %w", rawURL, err)
	}
	ws.SetReadLimit(4 << 20)
	hs := protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: "json", Version: 1})
	if err := ws.Write(ctx, websocket.MessageText, hs); err != nil {
		ws.CloseNow()
		return nil, nil, fmt.Errorf("handshake with %s: %w", rawURL, err)
	}
	var buf []byte
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			ws.CloseNow()
			return nil, nil, fmt.Errorf("handshake with %s: %w", rawURL, err)
		}
		buf = append(buf, data...)
		hr, n, err := protocol.ParseHandshakeResponse(buf)
		if errors.Is(err, protocol.ErrIncomplete) {
			continue
		}
		if err != nil {
			ws.CloseNow()
			return nil, nil, fmt.Errorf("handshake with %s: %w", rawURL, err)
		}
		if hr.Error != "" {
			ws.CloseNow()
			return nil, nil, fmt.Errorf("handshake with %s: server said %q", rawURL, hr.Error)
		}
		return ws, buf[n:], nil
	}
}

func (d *dialer) negotiateToken(ctx context.Context, hc *http.Client, rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/negotiate"
	q := u.Query()
	if !q.Has("negotiateVersion") {
		q.Set("negotiateVersion", "1")
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return "", err
	}
	for k, v := range d.header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("negotiate %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("negotiate %s: %w", rawURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("negotiate %s: HTTP %d: %s", rawURL, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	nr, err := protocol.ParseNegotiateResponse(body)
	if err != nil {
		return "", fmt.Errorf("negotiate %s: %w", rawURL, err)
	}
	if nr.Error != "" {
		return "", fmt.Errorf("negotiate %s: server said %q", rawURL, nr.Error)
	}
	if nr.URL != "" {
		return "", fmt.Errorf("negotiate %s: redirects (to %s) are not supported; point --url at the node", rawURL, nr.URL)
	}
	return nr.ConnectionToken, nil
}

func withQuery(rawURL, key, val string) string {
	sep := "?"
	if strings.Contains(rawURL, "?") {
		sep = "&"
	}
	return rawURL + sep + key + "=" + url.QueryEscape(val)
}

// joinInvocationID is the invocation id of a client's one JoinGroup.
const joinInvocationID = "1"

// phaseCounts are one client's receipts of one phase's messages.
type phaseCounts struct {
	unique   atomic.Int64 // first arrivals (in order, after a gap, or late)
	dups     atomic.Int64
	reorders atomic.Int64 // first arrivals of numbers skipped earlier
}

// client is one load connection.
type client struct {
	id    int
	node  int // index into the URL list
	group int // fanout: the group it joined; -1 for idle clients
	ws    *websocket.Conn
	w     *world

	// Owned by the reader goroutine.
	pend  []byte // a partial record carried to the next frame
	rbuf  []byte // reused frame buffer
	track seqTracker

	joined   chan error // JoinGroup's completion (buffer 1)
	done     chan struct{}
	received atomic.Int64 // group messages received, all phases
	phases   []phaseCounts
}

// world is what receivers share: per-phase latency histograms and error
// counters.
type world struct {
	lat         []shardedHist // per phase
	foreign     atomic.Int64  // group messages that did not parse or were for another group
	slowPath    atomic.Int64  // group messages that missed the fast path (other key order)
	closing     atomic.Bool   // set before loadgen closes connections itself
	disconnects atomic.Int64
	discMu      sync.Mutex
	firstDisc   string
}

func (w *world) disconnected(c *client, err error) {
	if w.closing.Load() {
		return
	}
	w.disconnects.Add(1)
	w.discMu.Lock()
	if w.firstDisc == "" {
		w.firstDisc = fmt.Sprintf("client %d (node %d): %v", c.id, c.node, err)
	}
	w.discMu.Unlock()
}

func (w *world) firstDisconnect() string {
	w.discMu.Lock()
	defer w.discMu.Unlock()
	return w.firstDisc
}

// readLoop runs until the connection ends; first holds bytes that came
// after the handshake.
func (c *client) readLoop(first []byte) {
	defer close(c.done)
	if len(first) > 0 {
		c.pend = c.consume(append([]byte(nil), first...))
	}
	for {
		_, rd, err := c.ws.Reader(context.Background())
		if err == nil {
			c.rbuf, err = readAllInto(c.rbuf[:0], rd)
		}
		if err != nil {
			c.w.disconnected(c, err)
			c.ws.CloseNow()
			select {
			case c.joined <- fmt.Errorf("connection ended: %w", err):
			default:
			}
			return
		}
		data := c.rbuf
		if len(c.pend) > 0 {
			data = append(c.pend, c.rbuf...)
		}
		c.pend = c.consume(data)
	}
}

// readAllInto appends everything r yields to dst, reusing its capacity.
func readAllInto(dst []byte, r io.Reader) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// consume handles every complete record of data and returns a copy of the
// incomplete tail (nil when there is none).
func (c *client) consume(data []byte) []byte {
	for len(data) > 0 {
		i := bytes.IndexByte(data, protocol.RecordSeparator)
		if i < 0 {
			return append([]byte(nil), data...)
		}
		c.onRecord(data[:i+1])
		data = data[i+1:]
	}
	return nil
}

// fastPrefix is how hubfabric (and ASP.NET Core) write the start of a
// group message to target "m": type first, no invocation id.
var fastPrefix = []byte(`{"type":1,"target":"m","arguments":["`)

// onRecord handles one record including its separator.
func (c *client) onRecord(rec []byte) {
	if p, ok := bytes.CutPrefix(rec, fastPrefix); ok {
		if end := bytes.IndexByte(p, '"'); end >= 0 && string(p[end:]) == "\"]}\x1e" {
			c.onPayload(p[:end])
			return
		}
	}
	msgs, _, err := protocol.JSON.ParseMessages(rec, 0)
	if err != nil || len(msgs) != 1 {
		return // unknown message types and the like: ignore, as the JS client does
	}
	switch m := msgs[0].(type) {
	case *protocol.Invocation:
		if m.Target != "m" || len(m.Arguments) == 0 {
			return
		}
		c.w.slowPath.Add(1)
		raw, _ := m.Arguments[0].(protocol.RawValue)
		var s string
		if json.Unmarshal(raw, &s) != nil {
			c.w.foreign.Add(1)
			return
		}
		c.onPayload([]byte(s))
	case *protocol.Completion:
		if m.InvocationID != joinInvocationID {
			return
		}
		var err error
		if m.Error != "" {
			err = fmt.Errorf("JoinGroup failed: %s", m.Error)
		}
		select {
		case c.joined <- err:
		default:
		}
	case *protocol.Close:
		if m.Error != "" {
			c.w.disconnected(c, fmt.Errorf("server closed the connection: %s", m.Error))
		}
	}
}

// onPayload checks one group message.
func (c *client) onPayload(p []byte) {
	now := time.Now().UnixNano()
	pl, ok := parsePayload(p)
	if !ok || pl.group != c.group || pl.phase >= len(c.phases) {
		c.w.foreign.Add(1)
		return
	}
	c.received.Add(1)
	pc := &c.phases[pl.phase]
	switch c.track.observe(pl.seq) {
	case seqNew:
		pc.unique.Add(1)
	case seqReorder:
		pc.unique.Add(1)
		pc.reorders.Add(1)
	case seqDup:
		pc.dups.Add(1)
		return
	}
	c.w.lat[pl.phase].record(c.id, now-pl.sentNanos)
}

// payload is what a publisher puts in each message, written as the decimal
// string "phase.group.seq.sentUnixNanos". phase is 2*step for the warm-up
// and 2*step+1 for the measured window; seq counts from 1 per publisher
// over the whole run; sentUnixNanos is the scheduled send time (open loop:
// latency includes any delay of the sender itself).
type payload struct {
	phase     int
	group     int
	seq       uint64
	sentNanos int64
}

func appendPayload(dst []byte, p payload) []byte {
	dst = strconv.AppendInt(dst, int64(p.phase), 10)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, int64(p.group), 10)
	dst = append(dst, '.')
	dst = strconv.AppendUint(dst, p.seq, 10)
	dst = append(dst, '.')
	return strconv.AppendInt(dst, p.sentNanos, 10)
}

func parsePayload(b []byte) (payload, bool) {
	var f [4]uint64
	n := 0
	digits := 0
	for _, ch := range b {
		switch {
		case ch >= '0' && ch <= '9':
			if digits == 19 {
				return payload{}, false
			}
			f[n] = f[n]*10 + uint64(ch-'0')
			digits++
		case ch == '.' && digits > 0 && n < 3:
			n++
			digits = 0
		default:
			return payload{}, false
		}
	}
	if n != 3 || digits == 0 || f[0] > 1<<20 || f[1] > 1<<30 || f[3] > 1<<62 {
		return payload{}, false
	}
	return payload{phase: int(f[0]), group: int(f[1]), seq: f[2], sentNanos: int64(f[3])}, true
}

// publishFrame builds SendToGroup(group, "m", payload) as a non-blocking
// invocation (no invocationId): prefix + payload + suffix.
func publishFramePrefix(group string) []byte {
	g, _ := json.Marshal(group)
	return append(append([]byte(`{"type":1,"target":"SendToGroup","arguments":[`), g...), `,"m","`...)
}

var publishFrameSuffix = []byte("\"]}\x1e")
