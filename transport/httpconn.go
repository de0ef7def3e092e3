package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// The transports that carry a connection over plain HTTP requests instead
// of a WebSocket: long polling (frames leave in poll answers) and
// Server-Sent Events (frames leave on one event stream). Both receive the
// client's messages in POSTs; one httpConn is the state of one such
// connection on the node that owns it.

// Transport names, as negotiate advertises them (SignalR's HttpTransportType).
const (
	transportWebSockets       = "WebSockets"
	transportServerSentEvents = "ServerSentEvents"
	transportLongPolling      = "LongPolling"
)

// Answers of the HTTP transports, as ASP.NET gives them.
const (
	msgNoConnection = "No Connection with that ID"
)

// errSocketClosed is what a write to an ended HTTP transport returns.
var errSocketClosed = errors.New("transport: the connection's HTTP transport has ended")

// httpConn is one long-polling or SSE connection on its owner node. It is
// created by the connection's first transport request (the first poll, or
// the SSE stream); the handshake arrives in the first POST, which opens
// the internal/conn connection over the transport's socket.
type httpConn struct {
	s         *Server
	hub       string
	token     string
	connID    string
	identity  auth.Identity
	transport string // transportLongPolling or transportServerSentEvents
	request   *http.Request

	// sendMu is held by the POST being served; a concurrent one gets 409.
	sendMu  sync.Mutex
	pending []byte // a partial record left at the end of a POST
	refused bool   // the handshake was refused: later sends are dropped
	// c and session are set by the handshake POST (under sendMu) and read
	// by later POSTs, polls and the end.
	mu      sync.Mutex
	c       *conn.Conn
	session Session
	endErr  error
	counted *atomic.Int64 // the open-connections gauge this connection is in
	// tornDown: run has taken c for its teardown (under mu).
	tornDown bool

	// frames carries the writer's frames to the polls (long polling); each
	// is a copy, owned by the poll that takes it.
	frames chan []byte
	// poll is closed to end the outstanding poll with 204 when another
	// one arrives (long polling).
	poll chan struct{}

	closed    chan struct{} // the socket side ended: no more frames
	closeOnce sync.Once
	ended     chan struct{} // the client side ended (DELETE, stream gone, timeout)
	finished  chan struct{} // run tore the connection down
	endOnce   sync.Once
	// sse is the event stream's writer (SSE only).
	sse *sseWriter
	// release ends the subscription of the connection's channel (Relay.Own);
	// nil without a relay.
	release func()
}

// lpSocket is a long-polling connection as the connection code's Socket:
// WriteFrame hands the frame to a poll, waiting for one.
type lpSocket struct{ h *httpConn }

func (s lpSocket) WriteFrame(ctx context.Context, frame []byte) error {
	f := bytes.Clone(frame) // the writer reuses its frame buffer
	select {
	case s.h.frames <- f:
		return nil
	case <-s.h.closed:
		return errSocketClosed
	case <-s.h.ended:
		return errSocketClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (s lpSocket) Close() error    { s.h.closeSocket(); return nil }
func (s lpSocket) CloseNow() error { s.h.closeSocket(); return nil }

func (h *httpConn) closeSocket() {
	h.closeOnce.Do(func() { close(h.closed) })
}

// end reports the client side's end (err nil: normal) once.
func (h *httpConn) end(err error) {
	h.endOnce.Do(func() {
		h.mu.Lock()
		h.endErr = err
		h.mu.Unlock()
		close(h.ended)
	})
}

// httpConns are a server's long-polling and SSE connections, by token.
type httpConns struct {
	mu    sync.Mutex
	conns map[string]*httpConn
}

func (t *httpConns) get(token string) *httpConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[token]
}

func (t *httpConns) put(h *httpConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = make(map[string]*httpConn)
	}
	t.conns[h.token] = h
}

func (t *httpConns) remove(h *httpConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns[h.token] == h {
		delete(t.conns, h.token)
	}
}

// newHTTPConn claims token and registers a new connection of transport
// for it; the caller answers the HTTP request. It returns the HTTP status
// and text of a refusal otherwise.
//
// sse is the event stream's writer (SSE; nil for long polling), held
// locked by the caller until the stream has started: it is the
// connection's socket from the moment the connection can be found, so a
// handshake POST that comes first writes after the stream's start.
func (s *Server) newHTTPConn(ctx context.Context, r *http.Request, hub, token, transport string, identity auth.Identity, sse *sseWriter) (*httpConn, int, string) {
	if token == "" {
		return nil, http.StatusBadRequest, "Connection ID required"
	}
	connID, err := s.tokens.claim(token, identity.UserID)
	switch {
	case errors.Is(err, errTokenActive):
		return nil, http.StatusConflict, "a connection with that ID is already active"
	case err != nil:
		return nil, http.StatusNotFound, msgNoConnection + ": " + err.Error()
	}
	h := &httpConn{
		s: s, hub: hub, token: token, connID: connID, identity: identity, transport: transport, request: r,
		frames: make(chan []byte), closed: make(chan struct{}), ended: make(chan struct{}), finished: make(chan struct{}),
		sse: sse,
	}
	if sse != nil {
		sse.h = h
	}
	if s.opts.Relay != nil {
		// Requests for the connection that land on other nodes come here
		// over its channel: subscribed before the client hears back.
		release, err := s.opts.Relay.Own(ctx, hub, connID)
		if err != nil {
			s.tokens.release(token)
			s.log.Warn("http connection refused: its channel could not be subscribed", "conn_id", connID, "err", err)
			return nil, http.StatusServiceUnavailable, "the connection could not be made reachable from other nodes: " + err.Error()
		}
		h.release = release
	}
	s.httpConns.put(h)
	// The connection goes on in a goroutine the server owns (s.active),
	// which ends it when its client side ends, and cleans up.
	s.active.Add(1)
	go h.run()
	if hook := s.connHook; hook != nil {
		hook(token)
	}
	return h, 0, ""
}

// run waits for the connection's end (the client's side or, before the
// handshake, the handshake timeout) and tears it down.
func (h *httpConn) run() {
	defer h.s.active.Done()
	defer h.s.tokens.release(h.token)
	hs := time.NewTimer(h.s.opts.HandshakeTimeout)
	defer hs.Stop()
	for {
		select {
		case <-hs.C:
			h.mu.Lock()
			open := h.c != nil
			h.mu.Unlock()
			if !open {
				h.s.log.Debug("http connection ended: no handshake", "conn_id", h.connID, "timeout", h.s.opts.HandshakeTimeout)
				h.closeSocket()
				h.end(errors.New("no handshake within " + h.s.opts.HandshakeTimeout.String()))
			}
			continue
		case <-h.s.stopCh:
			// Shutting down: a connection without a handshake has no hub
			// to close it; one with a handshake is closed by its hub.
			h.mu.Lock()
			open := h.c != nil
			h.mu.Unlock()
			if open {
				select {
				case <-h.ended:
				case <-h.closed:
					h.end(nil)
				}
				break
			}
			h.closeSocket()
			h.end(errors.New("server is shutting down"))
		case <-h.ended:
		case <-h.closed:
			// The server closed the connection (Close, client timeout):
			// the client side is over too.
			h.end(nil)
		}
		break
	}
	h.mu.Lock()
	c, err, counted := h.c, h.endErr, h.counted
	h.tornDown = true // a handshake that completes from now on ends itself
	h.mu.Unlock()
	if c != nil {
		c.End(err)
		c.Wait()
	}
	if counted != nil {
		counted.Add(-1)
	}
	h.closeSocket()
	close(h.finished)
	// Keep the ended connection a little, so a poll still gets its 204
	// rather than a 404, then forget it.
	t := time.NewTimer(endedGrace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-h.s.stopCh:
	}
	h.s.httpConns.remove(h)
	if h.release != nil {
		h.release()
	}
}

// endedGrace is how long an ended connection still answers polls with 204.
const endedGrace = 5 * time.Second

// maxSendBody bounds one POST's body: the client concatenates what it
// queued while a send was in flight, so a body may hold many records.
func (s *Server) maxSendBody() int64 {
	return int64(max(1<<20, 8*s.opts.MaxMessageSize))
}

// send serves one POST of the client's messages: the first carries the
// handshake (which opens the connection), later ones hub messages. It
// answers the status and text of the reply.
func (h *httpConn) send(ctx context.Context, body []byte) (int, string) {
	if !h.sendMu.TryLock() {
		return http.StatusConflict, "another send is in progress for this connection"
	}
	defer h.sendMu.Unlock()
	select {
	case <-h.ended:
		// The client is stopping: its last sends (a Close, an upload's
		// end) race with its DELETE. The connection is over; what it sent
		// is dropped without an error the client could not handle.
		h.s.log.Debug("send to an ended connection dropped", "conn_id", h.connID, "bytes", len(body))
		return http.StatusOK, ""
	case <-h.closed:
		h.s.log.Debug("send to an ended connection dropped", "conn_id", h.connID, "bytes", len(body))
		return http.StatusOK, ""
	default:
	}
	if h.refused {
		// The refusal is on its way to the client, which ends the
		// connection; nothing after it may open the connection.
		h.s.log.Debug("send after a refused handshake dropped", "conn_id", h.connID, "bytes", len(body))
		return http.StatusOK, ""
	}
	buf := append(h.pending, body...)
	h.pending = nil
	h.mu.Lock()
	c, session := h.c, h.session
	h.mu.Unlock()
	if c == nil {
		req, used, err := protocol.ParseHandshakeRequest(buf, h.s.opts.MaxMessageSize)
		switch {
		case errors.Is(err, protocol.ErrIncomplete):
			h.pending = buf
			return http.StatusOK, ""
		case err != nil:
			h.refuseHandshake(ctx, protocol.HandshakeErrorUnexpected+" "+err.Error())
			return http.StatusOK, ""
		}
		p, err := handshakeProtocol(req)
		if err == nil && h.transport == transportServerSentEvents && p.TransferFormat() != protocol.TransferText {
			msg := fmt.Sprintf("Cannot use the '%s' protocol on the current transport. The transport does not support 'Binary' transfer format.", req.Protocol)
			err = handshakeError(msg, msg)
		}
		if err != nil {
			var he *handshakeErr
			errors.As(err, &he)
			h.refuseHandshake(ctx, he.wire)
			return http.StatusOK, ""
		}
		if c, session, err = h.open(ctx, p); err != nil {
			return http.StatusOK, ""
		}
		buf = buf[used:]
		c.Received()
	}
	if len(buf) > 0 {
		c.Received()
		rest, err := h.s.deliver(c, session, buf)
		if err != nil {
			return http.StatusOK, "" // the Close message says why
		}
		if len(rest) > 0 {
			h.pending = bytes.Clone(rest)
		}
	}
	return http.StatusOK, ""
}

// refuseHandshake answers a bad handshake with its error and ends the
// connection.
//
// The answer waits for the client's next poll (long polling), up to the
// handshake timeout, on a goroutine the server owns: the POST that
// carried the handshake is answered at once.
func (h *httpConn) refuseHandshake(ctx context.Context, wire string) {
	h.s.log.Info("handshake refused", "hub", h.hub, "conn_id", h.connID, "reason", wire)
	h.refused = true // under sendMu (send calls it)
	sock := h.socket()
	h.s.active.Add(1)
	go func() {
		defer h.s.active.Done()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.s.opts.HandshakeTimeout)
		_ = sock.WriteFrame(wctx, protocol.AppendHandshakeResponse(nil, wire))
		cancel()
		h.closeSocket()
		h.end(errors.New(wire))
	}()
}

func (h *httpConn) socket() conn.Socket {
	if h.transport == transportServerSentEvents {
		return h.sse
	}
	return lpSocket{h}
}

// open runs the connection code over the transport's socket and attaches
// it to its hub.
func (h *httpConn) open(ctx context.Context, p protocol.HubProtocol) (*conn.Conn, Session, error) {
	s := h.s
	log := connLogger(s.log, h.hub, h.connID, h.transport)
	keepAlive := s.opts.KeepAliveInterval
	if h.transport == transportLongPolling {
		// Long polling is its own keep-alive (SignalR's inherent
		// keep-alive): no Pings; a poll answered empty after PollTimeout.
		keepAlive = 24 * time.Hour
	}
	var session Session
	stats := s.opts.Stats[h.hub]
	c, err := conn.Open(context.WithoutCancel(ctx), h.socket(), conn.Options{
		ID: h.connID, Protocol: p, MaxOutboundBytes: s.opts.MaxOutboundBytes,
		KeepAlive: keepAlive, ClientTimeout: s.opts.ClientTimeout,
		Runtime: seam.Real{}, Logger: log, Stats: stats,
	}, func(ctx context.Context, c *conn.Conn) (conn.Session, error) {
		var err error
		session, err = s.opts.Connect(ctx, ConnectRequest{Hub: h.hub, ConnectionID: h.connID, Identity: h.identity, Protocol: p, Conn: c, Request: h.request})
		return session, err
	})
	if err != nil {
		if c != nil {
			h.mu.Lock()
			h.c = c // run waits for the refusal to be written
			h.mu.Unlock()
		}
		h.end(err)
		return nil, nil, err
	}
	var counter *atomic.Int64
	if stats != nil {
		counter = &stats.LongPolling
		if h.transport == transportServerSentEvents {
			counter = &stats.ServerSentEvents
		}
		counter.Add(1) // run takes it back when the connection is over
	}
	h.mu.Lock()
	torn := h.tornDown
	if !torn {
		h.c, h.session, h.counted = c, session, counter
	}
	h.mu.Unlock()
	if torn {
		// The connection ended while the hub attached it: nobody else
		// will end it.
		c.End(nil)
		c.Wait()
		if counter != nil {
			counter.Add(-1)
		}
		return nil, nil, errSocketClosed
	}
	if s.isStopping() {
		c.Close("Server is shutting down.", true)
	}
	return c, session, nil
}

// pollResult is the answer to one poll.
type pollResult struct {
	status int
	body   []byte
}

// longPoll serves one poll: the frames waiting (200 with them), none
// within the poll timeout (200 empty), or the end (204). A newer poll
// ends this one with 204.
func (h *httpConn) longPoll(ctx context.Context) pollResult {
	mine := make(chan struct{})
	h.mu.Lock()
	if h.poll != nil {
		close(h.poll) // the older poll is ended, as ASP.NET does
	}
	h.poll = mine
	c := h.c
	h.mu.Unlock()
	if hook := h.s.pollHook; hook != nil {
		hook(h.token)
	}
	defer func() {
		h.mu.Lock()
		if h.poll == mine {
			h.poll = nil
		}
		h.mu.Unlock()
	}()
	if c != nil {
		// While a poll is outstanding the client is there: the client
		// timeout counts from the end of the last poll.
		c.HandOff()
		defer c.HandedOff()
	}
	t := time.NewTimer(h.s.opts.PollTimeout)
	defer t.Stop()
	select {
	case f := <-h.frames:
		// Take whatever else is ready too, without waiting.
		for len(f) < maxPollBody {
			select {
			case g := <-h.frames:
				f = append(f, g...)
				continue
			default:
			}
			break
		}
		return pollResult{status: http.StatusOK, body: f}
	case <-h.ended:
		// The client ended it (DELETE) or it timed out: no more frames
		// (the server's last Close included); answered once torn down.
		<-h.finished
		return pollResult{status: http.StatusNoContent}
	case <-h.finished: // the server closed it, after its last frame
		return pollResult{status: http.StatusNoContent}
	case <-mine:
		return pollResult{status: http.StatusNoContent}
	case <-t.C:
		return pollResult{status: http.StatusOK}
	case <-ctx.Done():
		return pollResult{status: http.StatusOK}
	}
}

// maxPollBody bounds what one poll answer gathers from several frames.
const maxPollBody = 256 << 10

// serveHTTPTransport serves a request of the long-polling or SSE
// transport: a GET poll or event stream, a POST of messages, a DELETE.
func (s *Server) serveHTTPTransport(w http.ResponseWriter, r *http.Request, hub string) {
	if _, err := checkOrigin(r, s.opts.AllowedOrigins); err != nil {
		s.log.Debug("request refused", "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if err := s.cors(w, r); err == nil && r.Method == http.MethodOptions {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Requested-With, X-SignalR-User-Agent")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	identity, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer s.active.Done()
	token, _ := queryValue(r.URL.RawQuery, "id")
	if token == "" {
		http.Error(w, "Connection ID required", http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet:
		if acceptsEventStream(r) {
			if s.opts.DisableServerSentEvents {
				http.Error(w, "the ServerSentEvents transport is turned off on this server", http.StatusNotFound)
				return
			}
			s.serveEventStream(w, r, hub, token, identity)
			return
		}
		if s.opts.DisableLongPolling {
			http.Error(w, "the LongPolling transport is turned off on this server", http.StatusNotFound)
			return
		}
		s.servePoll(w, r, hub, token, identity)
	case http.MethodPost:
		s.serveSend(w, r, hub, token, identity)
	case http.MethodDelete:
		s.serveDelete(w, r, hub, token, identity)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, r.Method+" is not a SignalR transport request", http.StatusMethodNotAllowed)
	}
}

func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, t := range splitComma(v) {
			if equalFoldASCII(t, "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// lookup finds the connection of token on this node, checking that the
// request is from the user that negotiated it.
func (s *Server) lookup(token string, identity auth.Identity) (*httpConn, int, string) {
	h := s.httpConns.get(token)
	if h == nil {
		return nil, http.StatusNotFound, msgNoConnection
	}
	if h.identity.UserID != identity.UserID {
		return nil, http.StatusForbidden, "the connection belongs to another user"
	}
	return h, 0, ""
}

func (s *Server) servePoll(w http.ResponseWriter, r *http.Request, hub, token string, identity auth.Identity) {
	h, status, msg := s.lookup(token, identity)
	if h == nil && status == http.StatusNotFound {
		if s.forward(w, r, RelayPoll, hub, token, identity, nil) {
			return // the token's home node owns it
		}
		// The first poll creates the connection and returns at once.
		if _, status, msg = s.newHTTPConn(r.Context(), r, hub, token, transportLongPolling, identity, nil); status == 0 {
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	if status != 0 {
		http.Error(w, msg, status)
		return
	}
	if h.transport != transportLongPolling {
		http.Error(w, "the connection does not use long polling", http.StatusBadRequest)
		return
	}
	// A poll outlives the server's read timeout (net/http would cancel
	// its context when the read deadline passes); the client bounds it.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	res := h.longPoll(r.Context())
	writePollResult(w, res)
}

func writePollResult(w http.ResponseWriter, res pollResult) {
	w.Header().Set("Cache-Control", "no-cache")
	if res.status != http.StatusOK {
		w.WriteHeader(res.status)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(len(res.body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.body)
}

func (s *Server) serveSend(w http.ResponseWriter, r *http.Request, hub, token string, identity auth.Identity) {
	h, status, msg := s.lookup(token, identity)
	if status != 0 && status != http.StatusNotFound {
		http.Error(w, msg, status)
		return
	}
	body, bstatus, bmsg := s.readSendBody(w, r)
	if bstatus != 0 {
		http.Error(w, bmsg, bstatus)
		return
	}
	if h == nil {
		if !s.forward(w, r, RelaySend, hub, token, identity, body) {
			http.Error(w, msg, status)
		}
		return
	}
	status, msg = h.send(r.Context(), body)
	if status != http.StatusOK {
		http.Error(w, msg, status)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// readSendBody reads a POST body up to maxSendBody.
func (s *Server) readSendBody(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	limit := s.maxSendBody()
	tooLarge := fmt.Sprintf("a send body is limited to %d bytes", limit)
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		w.Header().Set("Connection", "close")
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	case err != nil:
		w.Header().Set("Connection", "close")
		return nil, http.StatusBadRequest, "reading the request body: " + err.Error()
	}
	return buf.Bytes(), 0, ""
}

func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, hub, token string, identity auth.Identity) {
	h, status, msg := s.lookup(token, identity)
	if h == nil && status == http.StatusNotFound && s.forward(w, r, RelayDelete, hub, token, identity, nil) {
		return
	}
	if status != 0 {
		http.Error(w, msg, status)
		return
	}
	if status, msg = h.delete(); status >= 400 {
		http.Error(w, msg, status)
		return
	}
	w.WriteHeader(status)
}

// delete ends a long-polling connection (DELETE): 202, or 400 for another
// transport.
func (h *httpConn) delete() (int, string) {
	if h.transport != transportLongPolling {
		return http.StatusBadRequest, "Cannot terminate this connection using the DELETE endpoint."
	}
	h.end(nil) // it stays known for endedGrace: a late poll gets 204, a late send is dropped
	return http.StatusAccepted, ""
}
