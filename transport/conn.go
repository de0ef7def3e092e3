package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/metrics"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// wsSocket is a coder/websocket connection as the connection code's
// Socket: one frame per message, of the connection's transfer format.
type wsSocket struct {
	ws     *websocket.Conn
	typ    websocket.MessageType
	fw     *frameWriter // under ws's write buffer; nil when ws was not accepted with smallBuffers
	waiter *readWaiter  // the connection's; nil when it has none
}

// WriteFrame writes frame, waiting for the client as long as ctx allows.
func (w wsSocket) WriteFrame(ctx context.Context, frame []byte) error {
	if w.fw != nil {
		w.fw.blocking.Store(true)
		defer w.fw.blocking.Store(false)
	}
	return w.ws.Write(ctx, w.typ, frame)
}

// Close writes a Close frame (waiting for the client to take it), waits
// for the client's answer and closes the socket.
func (w wsSocket) Close() error {
	if w.waiter != nil {
		// coder/websocket reads the client's answer itself when no
		// reader is in a read (a parked connection's is not).
		w.waiter.gate.Lock()
		defer w.waiter.gate.Unlock()
	}
	if w.fw != nil {
		w.fw.blocking.Store(true)
		defer w.fw.blocking.Store(false)
	}
	err := w.ws.Close(websocket.StatusNormalClosure, "")
	if w.waiter != nil && readEndError(err) == nil {
		// Ended as a reader in a read would call a normal close.
		w.waiter.closedCleanly.Store(true)
	}
	return err
}

// CloseNow closes the socket at once.
func (w wsSocket) CloseNow() error { return w.ws.CloseNow() }

// withTryWrite returns the socket as a conn.TrySocket when it is a TCP
// socket under a frameWriter (the connection's writer then writes inline,
// without a goroutine, while the client keeps up), and as it is otherwise.
// From then on only WriteFrame and Close wait for the client.
func (w wsSocket) withTryWrite() conn.Socket {
	if w.fw == nil || w.fw.raw == nil {
		return w
	}
	w.fw.try.Store(true)
	return tryWSSocket{w}
}

// tryWSSocket is a wsSocket whose writes need not wait for the client.
type tryWSSocket struct{ wsSocket }

// TryWriteFrame writes frame as far as the socket takes it at once; the
// rest waits in the frameWriter for Flush or the next WriteFrame.
func (w tryWSSocket) TryWriteFrame(frame []byte) (complete bool, err error) {
	// coder/websocket's MessageText and MessageBinary are the opcodes.
	handled, complete, err := w.fw.writeDataFrame(byte(w.typ), frame)
	if handled {
		return complete, err
	}
	err = w.ws.Write(context.Background(), w.typ, frame)
	return !w.fw.spilled(), err
}

// Flush writes what TryWriteFrame left, waiting for the client.
func (w tryWSSocket) Flush() error { return w.fw.flush() }

func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request, hub string) {
	if r.Method != http.MethodGet || !websocketRequested(r) {
		s.serveHTTPTransport(w, r, hub)
		return
	}
	if _, err := checkOrigin(r, s.opts.AllowedOrigins); err != nil {
		s.log.Debug("websocket upgrade refused", "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	identity, ok := s.admit(w, r)
	if !ok {
		return
	}
	handedOff := false
	token, _ := queryValue(r.URL.RawQuery, "id")
	claimed := false
	var resumeOnly error // set: the token admits only a take-over (claimResume); why it admits nothing else
	defer func() {
		if !handedOff {
			if claimed {
				s.tokens.release(token)
			}
			s.active.Done()
		}
	}()
	var connID string
	if token == "" { // skipNegotiation
		connID = newConnectionID()
	} else {
		var err error
		connID, err = s.tokens.claim(token, identity.UserID)
		if err != nil && !errors.Is(err, errTokenInvalid) && s.opts.StatefulReconnect && isStateful(token) {
			// A stateful connection's reconnect, however old its token:
			// to the connection waiting here, or to take it over from
			// another node (which may be one it left this one for).
			if s.tryResume(w, r, token) {
				return
			}
			if s.opts.TakeOver != nil {
				refused := err
				if connID, err = s.tokens.claimResume(token, identity.UserID); err == nil {
					resumeOnly = refused
				}
			}
		}
		switch {
		case errors.Is(err, errTokenActive):
			http.Error(w, "a connection with that ID is already active", http.StatusConflict)
			return
		case err != nil:
			http.Error(w, "No Connection with that ID: "+err.Error(), http.StatusNotFound)
			return
		}
		claimed = true
	}
	// The Origin was checked above by the same function as negotiate's
	// (checkOrigin), so coder/websocket's own check, which parses the
	// Origin more leniently, is skipped.
	accepted := &smallBuffers{ResponseWriter: w, mayPark: canPark}
	ws, err := websocket.Accept(accepted, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Debug("websocket upgrade failed", "err", err)
		return
	}
	// No WebSocket read limit: frames are read in chunks and one record is
	// bounded by MaxMessageSize as it arrives (readFrame), so a record over
	// the limit gets a Close message at any size rather than a bare 1009,
	// and a frame of many small records is fine.
	ws.SetReadLimit(-1)
	// The connection goes on in a goroutine owned by the server (counted in
	// s.active, which Wait joins) and the HTTP handler returns: net/http
	// then drops its per-request state (the request's buffers, the response
	// writer, the handler goroutine's grown stack), which an open WebSocket
	// does not need. The request itself stays readable; its context is
	// replaced by one that keeps its values but is never cancelled.
	wc := &wsConnection{s: s, ctx: context.WithoutCancel(r.Context()), ws: ws, fw: accepted.fw, waiter: accepted.waiter,
		hub: hub, connID: connID, identity: identity, r: r, resumeOnly: resumeOnly}
	if claimed {
		wc.claimedToken = token
	}
	if accepted.nc != nil {
		accepted.nc.owner.Store(wc)
	}
	handedOff = true
	go wc.run()
}

// readBufferSize is the size of the buffer coder/websocket reads frame
// headers through. Payloads at least this long are read straight into the
// caller's (pooled) buffer, so a small one costs no extra copies. A
// connection holds it only while its client is sending (readWaiter.grow,
// shrink); a quiet one holds a parkedReadBufferSize one. net/http's own
// is 4 KiB.
const readBufferSize = 512

// smallBuffers is the ResponseWriter given to websocket.Accept: its Hijack
// replaces net/http's 4 KiB read and write buffers with a readBufferSize
// one (parkedReadBufferSize when mayPark is set and the socket can be
// waited for, so a quiet connection never holds the big one; more when it
// must carry over bytes the client sent early) and a writeBufferSize one
// over a frameWriter, which it keeps in fw.
type smallBuffers struct {
	http.ResponseWriter
	mayPark bool // the connection may park in the idlePoller (set by the caller)

	fw     *frameWriter // set by Hijack
	waiter *readWaiter  // set by Hijack; nil when the socket's descriptor is out of reach
	nc     *watchedConn // set by Hijack with waiter: the socket as coder/websocket has it
}

// watchedConn is the socket coder/websocket is given for a connection
// that can be parked (idlePoller): closing it here takes the socket out of
// the epoll set without an event, so Close starts the parked connection's
// reader, which then ends the connection.
type watchedConn struct {
	net.Conn
	owner atomic.Pointer[wsConnection] // set once the connection exists
}

// Close closes the socket and, when its connection is parked, starts the
// connection's reader.
func (c *watchedConn) Close() error {
	// After Close a park fails (its RawConn.Control does), and a park
	// under way finishes first (Close waits for Control's hold on the
	// descriptor), so the connection is either parked here or never.
	err := c.Conn.Close()
	if wc := c.owner.Load(); wc != nil {
		wc.s.poller.unpark(wc)
	}
	return err
}

// watch returns conn as coder/websocket should have it: watched when it
// has a waiter (it can be parked).
func (w *smallBuffers) watch(conn net.Conn) net.Conn {
	if w.waiter == nil {
		return conn
	}
	w.nc = &watchedConn{Conn: conn}
	return w.nc
}

// Unwrap lets http.ResponseController reach the wrapped writer.
func (w *smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack takes over the connection from net/http.
func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Writer.Buffered() > 0 { // net/http flushes its 101 answer itself; be sure
		if err := brw.Writer.Flush(); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	w.fw = newFrameWriter(conn)
	bwSize := writeBufferSize
	if w.fw.raw == nil {
		// Not a socket the frame writer reaches (TLS, say): every frame
		// goes through bw, and a frame flushed in two pieces is two writes
		// (two TLS records), so a small frame should fit.
		bwSize = heldBufferSize
	}
	bw := bufio.NewWriterSize(w.fw, bwSize)
	n := brw.Reader.Buffered()
	if n == 0 {
		// A connection that may park starts with a parked one's read
		// buffer: most connections are quiet after their handshake, and a
		// buffer given back later still counts in the node's memory until
		// a GC. Its reader grows it once the client sends more
		// (readWaiter.grow); without a waiter nothing would.
		size := readBufferSize
		if w.mayPark {
			size = parkedReadBufferSize
		}
		br := bufio.NewReaderSize(conn, size)
		w.waiter = newReadWaiter(conn, br)
		if w.waiter == nil && size < readBufferSize {
			br = bufio.NewReaderSize(conn, readBufferSize)
		}
		return w.watch(conn), bufio.NewReadWriter(br, bw), nil
	}
	// Accept takes what is buffered and then reads the socket directly, so
	// the early bytes must sit in the new reader's buffer, not behind it.
	early, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(n, readBufferSize))
	if _, err := br.Peek(n); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("carrying over %d buffered bytes: %w", n, err)
	}
	// Once br has handed out the early bytes it reads the socket, so an
	// empty br means the socket is where the next bytes come from.
	w.waiter = newReadWaiter(conn, br)
	return w.watch(conn), bufio.NewReadWriter(br, bw), nil
}

func websocketRequested(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range splitComma(v) {
			if equalFoldASCII(t, token) {
				return true
			}
		}
	}
	return false
}

func splitComma(v string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(v); i++ {
		if i == len(v) || v[i] == ',' {
			t := v[start:i]
			for len(t) > 0 && (t[0] == ' ' || t[0] == '\t') {
				t = t[1:]
			}
			for len(t) > 0 && (t[len(t)-1] == ' ' || t[len(t)-1] == '\t') {
				t = t[:len(t)-1]
			}
			out = append(out, t)
			start = i + 1
		}
	}
	return out
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// errHandshakeAnswered means the handshake failed and the client was
// already told so (a timeout answered by the timer).
var errHandshakeAnswered = errors.New("handshake timed out")

// handshake reads the handshake request. It returns the chosen protocol and
// any bytes that followed the handshake in its frame. The timeout is a
// timer rather than a read deadline, because cancelling a read closes the
// WebSocket before the client could be told why.
func (s *Server) handshake(ctx context.Context, ws *websocket.Conn, log *slog.Logger) (protocol.HubProtocol, int, []byte, io.Reader, error) {
	timer := time.AfterFunc(s.opts.HandshakeTimeout, func() {
		log.Info("handshake refused", "reason", "no handshake within "+s.opts.HandshakeTimeout.String())
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = ws.Write(wctx, websocket.MessageText, protocol.AppendHandshakeResponse(nil, protocol.HandshakeErrorCanceled))
		cancel()
		_ = ws.Close(websocket.StatusNormalClosure, "")
	})
	p, version, rest, rd, err := s.readHandshake(ws)
	if !timer.Stop() {
		return nil, 0, nil, nil, errHandshakeAnswered
	}
	return p, version, rest, rd, err
}

// readHandshake reads the handshake request in chunks, as readFrame does,
// so no more than MaxMessageSize plus a chunk is buffered. It returns the
// bytes read after the handshake and the frame they came in, if that frame
// is not read to its end, and the protocol version the client asked for.
//
// It reads with context.Background(), as frameReads.read does:
// coder/websocket keeps the context of a connection's last Reader call
// until the next one, and for a client that is quiet after its handshake
// the request's context would stay reachable with all it holds (net/http's
// contexts, their values, a Done channel: about 300 B per idle
// connection). Nothing is lost: the handshake's deadline is handshake's
// timer, which closes the socket, and the request's context is never
// cancelled here anyway (serveConnect hands over a context.WithoutCancel).
func (s *Server) readHandshake(ws *websocket.Conn) (protocol.HubProtocol, int, []byte, io.Reader, error) {
	// The chunk buffer comes from the readers' pool, as a frame's does (a
	// fresh one per handshake is 8 KiB of garbage per connect), and goes
	// back once the handshake is parsed: what follows it is copied out.
	bp := readBuffers.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= 64<<10 {
			*bp = buf[:0]
			readBuffers.Put(bp)
		}
	}()
	for {
		_, rd, err := ws.Reader(context.Background())
		if err != nil {
			return nil, 0, nil, nil, err
		}
		for {
			buf = s.reserveChunk(buf)
			n, rerr := rd.Read(buf[len(buf) : len(buf)+readChunk])
			buf = buf[:len(buf)+n]
			if n > 0 {
				req, used, err := protocol.ParseHandshakeRequest(buf, s.opts.MaxMessageSize)
				if err == nil {
					p, err := handshakeProtocol(req)
					if err != nil {
						return nil, 0, nil, nil, err
					}
					if rerr == io.EOF {
						rd = nil
					}
					// A copy: the chunk buffer is not kept for the
					// connection's life (pending lives across its reads).
					var rest []byte
					if used < len(buf) {
						rest = bytes.Clone(buf[used:])
					}
					return p, req.Version, rest, rd, nil
				}
				if errors.Is(err, protocol.ErrMessageTooLarge) {
					return nil, 0, nil, nil, handshakeError(protocol.HandshakeErrorCanceled, "handshake larger than the maximum message size")
				}
				if sequenceFirst(buf) { // a stateful reconnect (stateful.go)
					if rerr == io.EOF {
						rd = nil
					}
					return nil, 0, bytes.Clone(buf), rd, errSequenceFirst
				}
				if !errors.Is(err, protocol.ErrIncomplete) {
					return nil, 0, nil, nil, handshakeError(protocol.HandshakeErrorUnexpected+" "+err.Error(), err.Error())
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return nil, 0, nil, nil, rerr
			}
		}
	}
}

// handshakeProtocol checks the protocol and version a handshake asks for.
func handshakeProtocol(req protocol.HandshakeRequest) (protocol.HubProtocol, error) {
	p, ok := protocol.Lookup(req.Protocol)
	if !ok {
		msg := protocol.HandshakeErrorUnsupportedProtocol(req.Protocol)
		return nil, handshakeError(msg, msg)
	}
	if req.Version > p.Version() || req.Version < 0 {
		msg := protocol.HandshakeErrorUnsupportedVersion(req.Protocol, req.Version)
		return nil, handshakeError(msg, msg)
	}
	return p, nil
}

// handshakeErr is a failed handshake: wire is sent to the client, detail logged.
type handshakeErr struct{ wire, detail string }

func (e *handshakeErr) Error() string { return "handshake failed: " + e.detail }

func handshakeError(wire, detail string) error { return &handshakeErr{wire: wire, detail: detail} }

// wsConnection is an accepted WebSocket, served from its handshake to its
// end on goroutines owned by the server (counted in s.active, which Wait
// joins). The HTTP handler that accepted it has returned: net/http then
// drops its per-request state (the request's buffers, the response writer,
// the handler goroutine's grown stack), which an open WebSocket does not
// need. The request itself stays readable; its context is replaced by one
// that keeps its values but is never cancelled.
type wsConnection struct {
	s            *Server
	ctx          context.Context // the upgrade request's, until the setup is done (run)
	ws           *websocket.Conn
	fw           *frameWriter
	waiter       *readWaiter // nil: the connection is read on run's goroutine
	hub, connID  string
	identity     auth.Identity
	r            *http.Request // the upgrade request, until the setup is done (run)
	resumeOnly   error         // set: the client must resume a connection it takes over (run)
	claimedToken string        // released when the connection ends; empty when none was claimed

	set     *connSetup  // set by run
	fr      *frameReads // set by run; used by one reader at a time
	counted bool        // counted in set.stats.Connections; used by one goroutine at a time

	// The connection's place in s.poller, under the poller's mu.
	pollGen   uint64 // the epoll set its socket was added to (idlePoller.gen)
	parkToken uint64 // its last park
}

// run serves the connection; with resumeOnly set, the client must be
// resuming (Sequence first) a connection that it takes over, or it is
// closed with resumeOnly as the reason (its token is expired or used).
//
// The setup (handshake, the hub's connect, a take-over) runs here, then
// the reading (readFrames). A connection that has a readWaiter is not
// read on one goroutine for its whole life: once its client is quiet it
// parks in s.poller with no goroutine (memory per idle connection), and a
// new reader starts when the client speaks again.
func (wc *wsConnection) run() {
	reading := false
	defer func() {
		if !reading {
			wc.uncount() // after a panic in the stateful reader too
			wc.release()
		}
	}()
	// net/http recovered panics in the handler; the connection's
	// goroutines do the same so one faulty connection cannot take the node
	// down.
	defer wc.s.closeOnPanic(wc.connID, wc.ws)
	s := wc.s
	// The connection token is the request's "id" (claimed when not empty).
	set := s.setupConnection(wc.ctx, wc.ws, wc.fw, wc.waiter, wc.hub, wc.connID, wc.claimedToken, wc.identity, wc.r, wc.resumeOnly)
	// The upgrade request (its headers, URL and buffers, ~1.2 KB) and its
	// context (net/http's per-connection contexts) served the setup; an
	// open connection keeps neither.
	wc.r, wc.ctx = nil, nil
	if set == nil {
		return // refused, taken over, or ended during setup: all done there
	}
	wc.set = set
	c := set.c
	if set.stats != nil {
		set.stats.Connections.Add(1)
		wc.counted = true
	}
	if s.isStopping() {
		// Shutdown began while this connection was being set up.
		c.Close("Server is shutting down.", true)
	}
	if set.st != nil {
		// A stateful connection's socket changes with each reconnect: it
		// is read here, and does not park (setupConnection grew its read
		// buffer).
		endStateful(c, s.runStateful(wc.ws, set.sockType, c, set.st, set.session, set.token, set.rest, set.rd))
		wc.closed()
		return
	}
	wc.fr = newFrameReads(s, wc.ws, c, set.session, set.rest, set.rd)
	set.rest, set.rd = nil, nil
	reading = true
	wc.readFrames()
}

// readFrames reads the client's frames until the connection ends, which it
// then ends, or until the client is quiet and the connection parks in
// s.poller (which starts readFrames again when the client speaks). Without
// a readWaiter, or when parking fails, it reads on.
func (wc *wsConnection) readFrames() {
	err := errReadPanicked
	defer func() {
		if err != errParked {
			wc.end(err)
		}
	}()
	defer wc.s.closeOnPanic(wc.connID, wc.ws)
	fr, w := wc.fr, wc.waiter
	for {
		err = errReadPanicked // what a panic in this round ends the connection with
		err = fr.read(w)
		if err != errCaughtUp {
			return
		}
		if canPark {
			w.shrink()
		}
		if wc.s.poller.park(wc) {
			err = errParked
			return
		}
		w.wait()
	}
}

// end ends the connection after its reading ended with err.
func (wc *wsConnection) end(err error) {
	defer wc.release()
	defer wc.s.closeOnPanic(wc.connID, wc.ws)
	if wc.waiter != nil && wc.waiter.closedCleanly.Load() && errors.Is(err, net.ErrClosed) {
		// The node's close handshake read the client's answer itself (the
		// connection was parked), where a reader in a read would have
		// seen that answer and ended normally: the connection knows why
		// it closed, as it does then.
		err = nil
	}
	wc.set.c.End(err)
	wc.closed()
}

// closed waits for the ended connection to finish (its last writes, the
// socket's close) and takes it off the count of open ones.
func (wc *wsConnection) closed() {
	wc.set.c.Wait()
	wc.uncount()
}

// uncount takes the connection off the count of open ones, once.
func (wc *wsConnection) uncount() {
	if wc.counted {
		wc.counted = false
		wc.set.stats.Connections.Add(-1)
	}
}

// release gives back what serveConnect took for the connection: its
// connection token and its place in s.active.
func (wc *wsConnection) release() {
	if wc.claimedToken != "" {
		wc.s.tokens.release(wc.claimedToken)
	}
	wc.s.active.Done()
}

// closeOnPanic, deferred on a connection's goroutines, recovers a panic,
// logs it with its stack and closes the socket, so one faulty connection
// cannot take the node down.
func (s *Server) closeOnPanic(connID string, ws *websocket.Conn) {
	if p := recover(); p != nil {
		s.log.Error("connection panicked; closing it", "conn_id", connID, "panic", p, "stack", string(debug.Stack()))
		ws.CloseNow()
	}
}

// connSetup is what setupConnection hands to the connection's reader.
type connSetup struct {
	c        *conn.Conn
	session  Session
	stats    *metrics.Conn
	st       *conn.Stateful // stateful reconnect (stateful.go); nil otherwise
	sockType websocket.MessageType
	token    string
	rest     []byte    // bytes after the handshake
	rd       io.Reader // the rest of the handshake's frame, or nil
}

// setupConnection reads the handshake and opens the connection; it returns
// nil when the connection ended there (refused, taken over, or closed by
// the client), with everything done.
func (s *Server) setupConnection(ctx context.Context, ws *websocket.Conn, fw *frameWriter, waiter *readWaiter, hub, connID, token string, identity auth.Identity, r *http.Request, resumeOnly error) *connSetup {
	log := connLogger(s.log, hub, connID, "")
	p, version, rest, rd, err := s.handshake(ctx, ws, log)
	if errors.Is(err, errHandshakeAnswered) {
		return nil
	}
	if resumeOnly != nil && !errors.Is(err, errSequenceFirst) {
		log.Info("connection refused: its token admits only a stateful reconnect, and it did not resume", "reason", resumeOnly.Error(), "err", err)
		_ = ws.Close(websocket.StatusPolicyViolation, resumeOnly.Error())
		return nil
	}
	if errors.Is(err, errSequenceFirst) {
		if s.opts.TakeOver != nil && s.opts.StatefulReconnect && isStateful(token) {
			waiter.grow() // a stateful connection never parks
			s.takeOver(ctx, ws, hub, connID, identity, token, rest, rd, log)
			return nil
		}
		log.Info("stateful reconnect refused: the connection is not on this node", "reason", errSequenceFirst.Error())
		_ = ws.Close(websocket.StatusPolicyViolation, errSequenceFirst.Error())
		return nil
	}
	if err != nil {
		var he *handshakeErr
		if errors.As(err, &he) {
			log.Info("handshake refused", "reason", he.detail)
			wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
			_ = ws.Write(wctx, websocket.MessageText, protocol.AppendHandshakeResponse(nil, he.wire))
			wcancel()
			_ = ws.Close(websocket.StatusNormalClosure, "")
			return nil
		}
		log.Debug("connection ended during handshake", "err", err)
		ws.CloseNow()
		return nil
	}
	set := &connSetup{sockType: websocket.MessageText, token: token, rest: rest, rd: rd, stats: s.opts.Stats[hub]}
	sock := wsSocket{ws: ws, typ: websocket.MessageText, fw: fw, waiter: waiter}
	if p.TransferFormat() == protocol.TransferBinary {
		sock.typ = websocket.MessageBinary
		set.sockType = websocket.MessageBinary
	}
	var out conn.Socket
	if s.statefulConnection(token, version) {
		waiter.grow() // a stateful connection never parks
		set.st = conn.NewStateful(p, s.opts.StatefulReconnectBufferSize, sock)
		out = set.st
	} else {
		out = sock.withTryWrite()
	}
	c, err := conn.Open(ctx, out, conn.Options{
		ID: connID, Protocol: p, MaxOutboundBytes: s.opts.MaxOutboundBytes,
		KeepAlive: s.opts.KeepAliveInterval, ClientTimeout: s.opts.ClientTimeout,
		Runtime: seam.Real{}, Logger: log, Stats: set.stats,
	}, func(ctx context.Context, c *conn.Conn) (conn.Session, error) {
		var err error
		set.session, err = s.opts.Connect(ctx, ConnectRequest{Hub: hub, ConnectionID: connID, Identity: identity, Protocol: p, Conn: c, Request: r})
		return set.session, err
	})
	if err != nil {
		if c != nil {
			c.Wait() // the refusal is written and the socket closed
		} else {
			ws.CloseNow()
		}
		return nil
	}
	set.c = c
	return set
}

// readLoop reads frames until the connection ends, parses the records and
// hands each message to the session, all on the calling goroutine. It
// returns nil for a normal close. pending holds bytes that followed the
// handshake, and rd, when not nil, is the rest of the frame the handshake
// came in.
func (s *Server) readLoop(ws *websocket.Conn, c *conn.Conn, session Session, pending []byte, rd io.Reader) error {
	return newFrameReads(s, ws, c, session, pending, rd).read(nil)
}

// errCaughtUp ends frameReads.read when the client is quiet: it has sent
// nothing that is not read, and it is not busy (frameReads.busy).
var errCaughtUp = errors.New("transport: caught up with a quiet client")

// errParked ends a reader whose connection parked in the idlePoller.
var errParked = errors.New("transport: the connection is parked")

// errReadPanicked ends a connection whose frame reading panicked.
var errReadPanicked = errors.New("transport: reading the connection's frames panicked")

// frameReads is a connection's reading state between frames: the partial
// record a frame ended with, the rest of a frame not yet read, and the
// client's pace. It is used by one goroutine at a time.
type frameReads struct {
	s        *Server
	ws       *websocket.Conn
	c        *conn.Conn
	session  Session
	wantText bool
	pending  []byte    // a partial record left at the end of a frame
	rd       io.Reader // the rest of the current frame, or nil

	fromHandshake bool // pending holds the bytes that followed the handshake, not yet delivered
	handshakeTail bool // rd is the rest of the handshake's frame, which says nothing of the client's pace

	// The client is busy while its frames come less than s.readLinger
	// apart: it is then waited for in a read, as if it could not park.
	// Parking costs a goroutine start when the client speaks again; a
	// client that sends more often than readLinger is cheaper to wait for
	// (BENCHMARKS.md).
	lastFrame time.Time
	busy      bool
}

// newFrameReads returns the reading state of a connection whose handshake
// was followed by pending (bytes to deliver first) and rd (the rest of the
// handshake's frame, or nil).
func newFrameReads(s *Server, ws *websocket.Conn, c *conn.Conn, session Session, pending []byte, rd io.Reader) *frameReads {
	return &frameReads{s: s, ws: ws, c: c, session: session, pending: pending, rd: rd,
		wantText:      c.Protocol().TransferFormat() == protocol.TransferText,
		fromHandshake: len(pending) > 0, handshakeTail: rd != nil}
}

// read reads frames until the connection ends or, with a waiter, until the
// client is quiet (errCaughtUp).
func (fr *frameReads) read(waiter *readWaiter) error {
	s, c := fr.s, fr.c
	if fr.fromHandshake {
		fr.fromHandshake = false
		c.Received()
		var err error
		if fr.pending, err = s.deliver(c, fr.session, fr.pending); err != nil {
			return err
		}
		if len(fr.pending) == 0 {
			fr.pending = nil // nothing left: let the handshake's bytes go
		}
	}
	for {
		if fr.rd == nil && waiter != nil && !fr.busy && waiter.idle() {
			if !waiter.readable() {
				return errCaughtUp
			}
			if err := waiter.socketError(); err != nil {
				return err // the socket's error, which looking at it took (readWaiter.sockErr)
			}
			waiter.grow() // the client speaks: read it through a full-size buffer
		}
		if fr.rd == nil {
			// No deadline context (see internal/conn outbound.writeLoop): closing the
			// socket ends the read.
			typ, r, err := fr.ws.Reader(context.Background())
			if err != nil {
				return readEndError(err)
			}
			if fr.wantText && typ == websocket.MessageBinary {
				const msg = "Connection closed with an error: a binary frame was received on a JSON (text) connection."
				c.Close(msg, false)
				return errors.New(msg)
			}
			fr.rd = r
		}
		// A frame is read into a pooled buffer, taken only once the frame
		// has arrived, so an idle connection holds no read buffer; a
		// partial record left at the end of a frame is kept in pending.
		bp := readBuffers.Get().(*[]byte)
		buf, err := s.readFrame(fr.rd, c, fr.session, append((*bp)[:0], fr.pending...))
		fr.rd = nil
		fr.pending = nil
		if err == nil && len(buf) > 0 {
			fr.pending = bytes.Clone(buf)
		}
		if cap(buf) <= 64<<10 {
			*bp = buf[:0]
			readBuffers.Put(bp)
		}
		if err != nil {
			return err
		}
		if fr.handshakeTail {
			fr.handshakeTail = false
		} else if waiter != nil {
			now := time.Now()
			fr.busy = now.Sub(fr.lastFrame) < s.readLinger
			fr.lastFrame = now
		}
	}
}

// prefixSlack covers a MessagePack record's length prefix (at most 5
// bytes), which a partial record holds beyond its MaxMessageSize body.
const prefixSlack = 8

// readChunk is the most read from a frame at once. Records are parsed
// after every chunk and the complete ones handed on, so the buffer holds at
// most one record (bounded by MaxMessageSize) plus one chunk, whatever the
// frame's size: a record over the limit gets its Close message as soon as
// the limit is passed, and the WebSocket itself has no read limit.
const readChunk = 8 << 10

// readFrame reads the rest of the frame rd onto buf (which starts with the
// pending partial record), delivering records as they complete, and
// returns the partial record left at the frame's end.
func (s *Server) readFrame(rd io.Reader, c *conn.Conn, session Session, buf []byte) ([]byte, error) {
	for {
		buf = s.reserveChunk(buf)
		n, err := rd.Read(buf[len(buf) : len(buf)+readChunk])
		if n > 0 {
			buf = buf[:len(buf)+n]
			c.Received()
			var derr error
			if buf, derr = s.deliver(c, session, buf); derr != nil {
				return buf, derr
			}
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, readEndError(err)
		}
	}
}

// reserveChunk returns buf with room for readChunk more bytes, growing it
// at most to one record plus a chunk.
func (s *Server) reserveChunk(buf []byte) []byte {
	if cap(buf)-len(buf) >= readChunk {
		return buf
	}
	size := max(len(buf)+readChunk, min(2*cap(buf), s.opts.MaxMessageSize+readChunk+prefixSlack))
	nb := make([]byte, len(buf), size)
	copy(nb, buf)
	return nb
}

// deliver parses the records at the start of buf, hands each message to
// the session and returns buf holding only the partial record left (moved
// to its start; parsed messages never alias buf, the parsers copy). A
// record over MaxMessageSize or a malformed one closes the connection with
// a Close message saying why, and is returned as the error.
func (s *Server) deliver(c *conn.Conn, session Session, buf []byte) ([]byte, error) {
	msgs, n, err := c.Protocol().ParseMessages(buf, s.opts.MaxMessageSize)
	if st := c.Stats(); st != nil && len(msgs) > 0 {
		st.Received.Add(uint64(len(msgs)))
	}
	if len(msgs) > 0 {
		// Receive may wait for the node (a full invocation bound or upload
		// buffer): that is not the client's silence. Marked once per batch.
		c.HandOff()
		for _, m := range msgs {
			if _, ok := m.(*protocol.Ping); ok {
				continue
			}
			session.Receive(m)
		}
		c.HandedOff()
	}
	if err != nil {
		msg := "Connection closed with an error: " + err.Error()
		c.Close(msg, false)
		return buf[:0], errors.New(msg)
	}
	return buf[:copy(buf, buf[n:])], nil
}

// readBuffers holds frame buffers shared by all connections' readers.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, 0, readChunk); return &b }}

func readEndError(err error) error {
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
