package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// Stateful reconnect (SignalR hub protocol v2, WebSockets only, as in
// ASP.NET Core 8+). Negotiate grants it when the client asks
// (useStatefulReconnect=true) and Options.StatefulReconnect is set; the
// grant is a flag bit of the connection token, so any node sharing the
// token secret knows it. A connection is stateful when its token has the
// bit and its handshake asks for version 2 or more. Its socket is a
// conn.Stateful, which numbers and keeps what it sends until the client's
// Ack; when its WebSocket ends without the client's Close message, the
// connection (its hub actor, groups, pending calls) stays for
// StatefulReconnectWindow, and a WebSocket request with the same token
// (the client reconnects at once, without negotiate or handshake) takes its
// place: the node sends Sequence and every unacknowledged message, and
// drops what the client resends and the node already had.

// ackInterval is how often a stateful connection acknowledges what it
// received (ASP.NET's 1 s timer), when it received anything new.
const ackInterval = time.Second

// statefulRequested reports whether negotiate grants stateful reconnect.
func (s *Server) statefulRequested(version int, rawQuery string) bool {
	if !s.opts.StatefulReconnect || version < 1 {
		return false
	}
	v, _ := queryValue(rawQuery, "useStatefulReconnect")
	return v == "true"
}

// statefulConnection reports whether a connection with token and handshake
// version runs stateful.
func (s *Server) statefulConnection(token string, version int) bool {
	return s.opts.StatefulReconnect && token != "" && version >= 2 && isStateful(token)
}

// errSequenceFirst: a new WebSocket began with a Sequence message instead
// of a handshake: the client resumes a stateful connection that this node
// does not have (it lives on another node, or it ended). With
// Options.TakeOver the connection moves here (takeOver); without, the
// client is told why in the WebSocket close reason and starts anew.
var errSequenceFirst = errors.New("stateful reconnect: the connection is not on this node, and this node does not take connections over")

// errMovedAway ends the reading of a stateful connection that was handed
// over to another node.
var errMovedAway = errors.New("the connection moved to another node")

// endStateful ends a stateful connection after runStateful: as any other,
// unless it moved away (then its hub is not told: it goes on elsewhere).
func endStateful(c *conn.Conn, err error) {
	if errors.Is(err, errMovedAway) {
		c.EndMoved()
		return
	}
	c.End(err)
}

// closeReason fits text into a WebSocket close reason (at most 123 bytes).
func closeReason(text string) string {
	if len(text) <= 123 {
		return text
	}
	cut := 120
	for cut > 0 && text[cut]&0xc0 == 0x80 { // not inside a UTF-8 sequence
		cut--
	}
	return text[:cut] + "..."
}

// takeOver moves here the stateful connection whose client reconnected on
// ws (its first bytes, pending and rd, begin with Sequence): the hub gets
// its state from the node that owns it, the connection is rebuilt from it
// and the client's socket attached (Sequence, then what the client did not
// acknowledge), and reading goes on as for any stateful connection. When
// the move fails the client's WebSocket is closed with the reason.
func (s *Server) takeOver(ctx context.Context, ws *websocket.Conn, hub, connID string, identity auth.Identity, token string, pending []byte, rd io.Reader, log *slog.Logger) {
	grant, err := s.opts.TakeOver(ctx, TakeOverRequest{Hub: hub, ConnectionID: connID, Identity: identity})
	if err != nil {
		log.Info("stateful reconnect refused: the connection could not move here", "reason", err.Error())
		_ = ws.Close(websocket.StatusPolicyViolation, closeReason(err.Error()))
		return
	}
	p := grant.Protocol
	st, err := conn.RestoreStateful(p, s.opts.StatefulReconnectBufferSize, grant.State)
	if err != nil {
		grant.Abort(err.Error())
		log.Warn("stateful reconnect refused: the state from the old node does not restore", "err", err)
		_ = ws.Close(websocket.StatusInternalError, closeReason("the connection's state did not restore: "+err.Error()))
		return
	}
	sock := wsSocket{ws: ws, typ: websocket.MessageText}
	if p.TransferFormat() == protocol.TransferBinary {
		sock.typ = websocket.MessageBinary
	}
	var session Session
	stats := s.opts.Stats[hub]
	c, err := conn.Open(ctx, st, conn.Options{
		ID: connID, Protocol: p, MaxOutboundBytes: s.opts.MaxOutboundBytes,
		KeepAlive: s.opts.KeepAliveInterval, ClientTimeout: s.opts.ClientTimeout,
		Runtime: seam.Real{}, Logger: log, Stats: stats, Resumed: true,
	}, func(ctx context.Context, c *conn.Conn) (conn.Session, error) {
		var err error
		session, err = grant.Attach(ctx, c)
		return session, err
	})
	if err != nil {
		if c != nil {
			c.Wait()
		}
		_ = ws.Close(websocket.StatusPolicyViolation, closeReason("the connection could not move here: "+err.Error()))
		return
	}
	if stats != nil {
		stats.Connections.Add(1)
		defer stats.Connections.Add(-1)
	}
	if s.isStopping() {
		c.Close("Server is shutting down.", true)
	}
	if err := st.Attach(ctx, sock); err != nil {
		log.Debug("stateful reconnect: resending to the moved connection's socket failed", "err", err)
	}
	endStateful(c, s.runStateful(ws, sock.typ, c, st, session, token, pending, rd))
	c.Wait()
}

// sequenceFirst reports whether buf begins with a Sequence message in
// either hub protocol (what a resuming client sends first).
func sequenceFirst(buf []byte) bool {
	for _, p := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
		msgs, _, _ := p.ParseMessages(buf, len(buf)+16)
		if len(msgs) > 0 {
			if _, ok := msgs[0].(*protocol.Sequence); ok {
				return true
			}
		}
	}
	return false
}

// resumes are the stateful connections of the node by token: where a
// reconnecting WebSocket goes.
type resumes struct {
	mu sync.Mutex
	m  map[string]*resumeSlot
}

// resumeSlot is one stateful connection's place for its next WebSocket.
type resumeSlot struct {
	mu      sync.Mutex
	cur     *websocket.Conn // the WebSocket being read now
	pending *websocket.Conn // a reconnect waiting to be attached
	next    chan struct{}   // signalled when pending is set
	ended   bool
	st      *conn.Stateful
	gone    chan struct{} // closed once the slot is removed and its token released
}

func (r *resumes) add(token string, ws *websocket.Conn, st *conn.Stateful) *resumeSlot {
	slot := &resumeSlot{cur: ws, next: make(chan struct{}, 1), st: st, gone: make(chan struct{})}
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]*resumeSlot{}
	}
	r.m[token] = slot
	r.mu.Unlock()
	return slot
}

func (r *resumes) remove(token string, slot *resumeSlot) {
	r.mu.Lock()
	if r.m[token] == slot {
		delete(r.m, token)
	}
	r.mu.Unlock()
	slot.mu.Lock()
	slot.ended = true
	p := slot.pending
	slot.pending = nil
	slot.mu.Unlock()
	if p != nil {
		_ = p.Close(websocket.StatusNormalClosure, "the connection ended")
	}
	close(slot.gone)
}

func (r *resumes) get(token string) *resumeSlot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[token]
}

// offer hands ws to the connection; the WebSocket it reads now is closed,
// so its reader ends and the connection takes ws. The latest offer wins.
// It reports false once the connection ended.
func (slot *resumeSlot) offer(ws *websocket.Conn) bool {
	slot.mu.Lock()
	if slot.ended {
		slot.mu.Unlock()
		return false
	}
	old, cur := slot.pending, slot.cur
	slot.pending = ws
	slot.mu.Unlock()
	if old != nil {
		_ = old.CloseNow()
	}
	if cur != nil {
		_ = cur.CloseNow()
	}
	select {
	case slot.next <- struct{}{}:
	default:
	}
	return true
}

// take returns the pending WebSocket, now the one being read, or nil.
func (slot *resumeSlot) take() *websocket.Conn {
	slot.mu.Lock()
	defer slot.mu.Unlock()
	ws := slot.pending
	slot.pending = nil
	if ws != nil {
		slot.cur = ws
	}
	return ws
}

// tryResume takes a WebSocket request whose token belongs to a stateful
// connection of this node: it upgrades it and hands it to the connection.
// It reports false when the token has no such connection.
func (s *Server) tryResume(w http.ResponseWriter, r *http.Request, token string) bool {
	slot := s.resumes.get(token)
	if slot == nil {
		return false
	}
	if slot.st.Moved() {
		// It moved to another node, and is letting go of its slot and
		// token here: once it has, the caller can take it over (back).
		select {
		case <-slot.gone:
		case <-r.Context().Done():
		}
		return false
	}
	ws, err := websocket.Accept(&smallBuffers{ResponseWriter: w}, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Debug("websocket upgrade failed (stateful reconnect)", "err", err)
		return true
	}
	ws.SetReadLimit(-1)
	if !slot.offer(ws) {
		_ = ws.Close(websocket.StatusNormalClosure, "the connection ended")
	}
	return true
}

// statefulSession is the Session of a stateful connection: the client's
// Acks and Sequences go to its conn.Stateful, duplicates are dropped, and
// what was received is acknowledged every ackInterval.
type statefulSession struct {
	inner Session
	st    *conn.Stateful
	c     *conn.Conn

	sawClose atomic.Bool // the client sent a Close message: its close is graceful
	ackMu    sync.Mutex
	ackTimer *time.Timer
	stopped  bool
}

func (ss *statefulSession) Receive(m protocol.Message) {
	if _, ok := m.(*protocol.Close); ok {
		ss.sawClose.Store(true)
	}
	pass, err := ss.st.Received(m)
	if err != nil {
		ss.c.Close("Connection closed with an error: "+err.Error(), false)
		return
	}
	if !pass {
		return
	}
	if t := m.MessageType(); t >= protocol.TypeInvocation && t <= protocol.TypeCancelInvocation {
		ss.armAck()
	}
	ss.inner.Receive(m)
}

func (ss *statefulSession) Closed(err error) { ss.inner.Closed(err) }

func (ss *statefulSession) armAck() {
	ss.ackMu.Lock()
	defer ss.ackMu.Unlock()
	if ss.ackTimer != nil || ss.stopped {
		return
	}
	ss.ackTimer = time.AfterFunc(ackInterval, func() {
		ss.ackMu.Lock()
		ss.ackTimer = nil
		ack, due := ss.st.AckDue()
		ss.ackMu.Unlock()
		if due {
			_ = ss.c.Send(ack)
		}
	})
}

func (ss *statefulSession) stop() {
	ss.ackMu.Lock()
	defer ss.ackMu.Unlock()
	ss.stopped = true
	if ss.ackTimer != nil {
		ss.ackTimer.Stop()
		ss.ackTimer = nil
	}
}

// runStateful reads a stateful connection across its WebSockets until it
// ends: the client closed it (its Close message), the node closed it, or
// no WebSocket came back within the window after a drop. It returns why,
// as readLoop does (nil for a normal close).
func (s *Server) runStateful(ws *websocket.Conn, sockType websocket.MessageType, c *conn.Conn, st *conn.Stateful, session Session, token string, pending []byte, rd io.Reader) error {
	slot := s.resumes.add(token, ws, st)
	defer func() {
		s.tokens.release(token) // before the slot goes: a take-over may wait for it (tryResume)
		s.resumes.remove(token, slot)
	}()
	ss := &statefulSession{inner: session, st: st, c: c}
	defer ss.stop()
	cur := conn.Socket(wsSocket{ws: ws, typ: sockType})
	for {
		err := s.readLoop(ws, c, ss, pending, rd)
		pending, rd = nil, nil
		if st.Moved() {
			return errMovedAway
		}
		if ss.sawClose.Load() || st.Closed() {
			return err
		}
		st.Detach(cur)
		c.HandOff() // the client timeout does not run while no socket is there
		s.log.Debug("stateful connection lost its socket; waiting for the client to reconnect", "conn_id", c.ID(), "window", s.opts.StatefulReconnectWindow, "err", err)
		next := slot.take()
		if next == nil {
			timer := time.NewTimer(s.opts.StatefulReconnectWindow)
		wait:
			for next == nil {
				select {
				case <-slot.next:
					next = slot.take() // nil: a signal for a socket already taken
				case <-timer.C:
					break wait
				case <-st.Done():
					break wait
				}
			}
			timer.Stop()
		}
		c.HandedOff()
		if next == nil {
			if st.Moved() {
				return errMovedAway
			}
			if st.Closed() {
				return err
			}
			return fmt.Errorf("the client did not reconnect within %s after its socket dropped", s.opts.StatefulReconnectWindow)
		}
		ws = next
		cur = wsSocket{ws: ws, typ: sockType}
		if err := st.Attach(context.Background(), cur); err != nil {
			s.log.Debug("stateful reconnect: resending failed", "conn_id", c.ID(), "err", err)
		}
	}
}
