// Package transport serves SignalR over HTTP: the negotiate endpoint, the
// WebSocket endpoint (coder/websocket), Server-Sent Events and long polling,
// with the handshake and the readers. Each connection's outbound queue,
// keep-alive and client timeout are internal/conn's, run over the
// WebSocket, the event stream or the polls. Requests of the HTTP
// transports for a connection another node owns go to it through a Relay.
// It hands parsed hub messages to a Session and knows nothing about hubs
// or actors.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/metrics"
	"github.com/hubfabric/hubfabric/protocol"
)

// Session is the hub side of one connection. The transport calls Receive
// from the connection's reader goroutine, in arrival order, and Closed once,
// after the last Receive.
type Session interface {
	// Receive handles one parsed message from the client.
	Receive(msg protocol.Message)
	// Closed reports that the connection ended; err is nil for a normal
	// close by the client.
	Closed(err error)
}

// ConnectRequest describes a connection that completed its handshake.
type ConnectRequest struct {
	Hub          string
	ConnectionID string
	Identity     auth.Identity
	Protocol     protocol.HubProtocol
	// Conn is the connection's outbound side (the actors' Outlet).
	Conn *conn.Conn
	// Request is the WebSocket upgrade request, or the long poll or event
	// stream that created the connection, for its headers, URL and remote
	// address; nil for a long-polling connection created by a poll another
	// node forwarded. Its HTTP handler may have returned, so its Context
	// may already be done; use the ctx given to Connect instead.
	Request *http.Request
}

// TakeOverRequest names a stateful connection to move to this node.
type TakeOverRequest struct {
	Hub          string
	ConnectionID string
	Identity     auth.Identity
}

// TakeOverGrant is a connection handed over to this node: its protocol,
// its stateful state, and Attach, which attaches it to its hub as Connect
// does (without OnConnected). Abort tells the hub the transport could not
// take it after all (reason says why); call one of the two.
type TakeOverGrant struct {
	Protocol protocol.HubProtocol
	State    conn.StatefulState
	Attach   func(ctx context.Context, c *conn.Conn) (Session, error)
	Abort    func(reason string)
}

// Options configure a Server. The durations and sizes are required (the
// facade, package hub, fills them from its Config, where their defaults
// are defined); the other fields document their zero value.
type Options struct {
	// Hubs are the hub names served; a request for another name gets 404.
	Hubs []string
	// Connect attaches a handshaken connection to its hub and returns the
	// Session that receives its messages. An error refuses the connection
	// with a Close message carrying the error text. Required.
	Connect func(ctx context.Context, req ConnectRequest) (Session, error)
	// Authenticator identifies the caller of negotiate and WebSocket
	// requests. Required.
	Authenticator auth.Authenticator
	// TokenSecret keys connection tokens. Nodes that share it accept each
	// other's tokens (no sticky sessions). Required.
	TokenSecret []byte
	// TokenTTL is how long a negotiated token may be used to connect.
	TokenTTL time.Duration
	// AllowedOrigins are host patterns (path.Match syntax, e.g.
	// "*.example.com") of browser origins allowed to connect cross-origin,
	// for both negotiate (CORS with credentials) and the WebSocket upgrade.
	// Same-origin requests are always allowed. Default: none.
	AllowedOrigins []string
	// KeepAliveInterval: a Ping is sent when nothing was sent for this long.
	KeepAliveInterval time.Duration
	// ClientTimeout: the connection is closed when nothing was received for
	// this long, counted from the client's first message.
	ClientTimeout time.Duration
	// HandshakeTimeout bounds the wait for the handshake request.
	HandshakeTimeout time.Duration
	// MaxMessageSize bounds one received hub message in bytes.
	MaxMessageSize int
	// MaxOutboundBytes bounds the bytes queued for one slow client; past it
	// the client is closed with a Close message saying so.
	MaxOutboundBytes int
	// Logger receives transport logs. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// NodeID is this node's id on the backplane; with Relay it goes into
	// the tokens this node mints, as their home node (the owner of a
	// long-polling connection). Default "": no home, one node.
	NodeID string
	// Relay forwards HTTP-transport requests for connections other nodes
	// own. Default nil: a node serves only the connections it has.
	Relay Relay
	// DisableLongPolling and DisableServerSentEvents turn those transports
	// off: negotiate does not offer them and their requests get 404.
	// Default: both on, after WebSockets.
	DisableLongPolling      bool
	DisableServerSentEvents bool
	// PollTimeout is how long a long poll waits for something to send
	// before it is answered empty (the client polls again). Default 90 s
	// (package hub passes its Config's).
	PollTimeout time.Duration
	// Stats are the counters of each hub's connections, by hub name (open
	// connections, messages received and sent, slow-client closes, queued
	// bytes). Default nil: nothing is counted.
	Stats map[string]*metrics.Conn
	// StatefulReconnect grants stateful reconnect (SignalR protocol v2:
	// Ack and Sequence messages, resume after a dropped WebSocket) to
	// clients that ask for it on negotiate. Default false.
	StatefulReconnect bool
	// StatefulReconnectBufferSize bounds the unacknowledged bytes kept for
	// one stateful connection; when full, sending to it waits for the
	// client's Ack (see conn.Stateful). Required with StatefulReconnect.
	StatefulReconnectBufferSize int
	// StatefulReconnectWindow is how long a stateful connection whose
	// WebSocket dropped waits for the client to reconnect with its token.
	// Required with StatefulReconnect.
	StatefulReconnectWindow time.Duration
	// TakeOver, when set, moves here a stateful connection whose client
	// reconnected to this node while another node owns it (hand-over);
	// nil refuses such a reconnect. It returns the connection's protocol,
	// state and how to attach it, or why it cannot move (the text goes to
	// the client as the WebSocket close reason).
	TakeOver func(ctx context.Context, req TakeOverRequest) (*TakeOverGrant, error)
}

func (o Options) withDefaults() (Options, error) {
	if o.Connect == nil {
		return o, errors.New("transport: Options.Connect is required")
	}
	if o.Authenticator == nil {
		return o, errors.New("transport: Options.Authenticator is required (auth.Anonymous lets everybody in)")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"TokenTTL", int64(o.TokenTTL)}, {"KeepAliveInterval", int64(o.KeepAliveInterval)},
		{"ClientTimeout", int64(o.ClientTimeout)}, {"HandshakeTimeout", int64(o.HandshakeTimeout)},
		{"MaxMessageSize", int64(o.MaxMessageSize)}, {"MaxOutboundBytes", int64(o.MaxOutboundBytes)},
	} {
		if f.v <= 0 {
			return o, fmt.Errorf("transport: Options.%s must be positive (got %d)", f.name, f.v)
		}
	}
	if o.Relay != nil && len(o.NodeID) > maxHomeLen {
		// It goes into every token this node mints, and check refuses a
		// longer home: the node's tokens would all be invalid.
		return o, fmt.Errorf("transport: Options.NodeID must be at most %d bytes with a Relay (got %d)", maxHomeLen, len(o.NodeID))
	}
	if o.PollTimeout < 0 {
		return o, fmt.Errorf("transport: Options.PollTimeout must not be negative (got %d)", o.PollTimeout)
	}
	if o.PollTimeout == 0 {
		o.PollTimeout = defaultPollTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.TokenSecret) == 0 {
		return o, errors.New("transport: Options.TokenSecret is required")
	}
	if o.StatefulReconnect && (o.StatefulReconnectBufferSize <= 0 || o.StatefulReconnectWindow <= 0) {
		return o, fmt.Errorf("transport: Options.StatefulReconnectBufferSize and StatefulReconnectWindow must be positive with StatefulReconnect (got %d, %s)", o.StatefulReconnectBufferSize, o.StatefulReconnectWindow)
	}
	for _, p := range o.AllowedOrigins {
		if err := ValidOriginPattern(p); err != nil {
			return o, fmt.Errorf("transport: %w", err)
		}
	}
	return o, nil
}

// Server is the http.Handler for a node's hubs: `{base}/{hub}/negotiate` and
// `{base}/{hub}` (the WebSocket endpoint), where base is whatever prefix the
// handler is mounted under (it matches on the last path segments). It is
// safe for concurrent use. Shutdown refuses new connections; closing
// existing ones is the hubs' job.
type Server struct {
	opts       Options
	hubs       map[string]bool
	tokens     *tokens
	log        *slog.Logger
	transports []protocol.AvailableTransport // what negotiate offers, from opts; read only

	mu       sync.Mutex
	stopping bool
	active   sync.WaitGroup

	httpConns httpConns          // long-polling and SSE connections owned here
	stopCh    chan struct{}      // closed by StopAccepting
	pollHook  func(token string) // tests: called when a poll starts waiting
	connHook  func(token string) // tests: called when an HTTP connection is registered
	resumes   resumes            // stateful connections by token (stateful.go)
	poller    idlePoller         // quiet WebSockets, without a goroutine each (idlepoll_linux.go)
	// readLinger is how close together a WebSocket's frames must come for
	// its client to count as busy (frameReads.busy): defaultReadLinger, or
	// 0 in tests, so that a connection parks whenever it is read up.
	readLinger time.Duration
}

// NewServer validates opts and returns a Server.
func NewServer(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, hubs: make(map[string]bool), tokens: newTokens(opts.TokenSecret, opts.TokenTTL, opts.Now), log: opts.Logger, stopCh: make(chan struct{}), readLinger: defaultReadLinger}
	s.poller.log = s.log
	if opts.Relay != nil {
		s.tokens.home = opts.NodeID
	}
	for _, h := range opts.Hubs {
		s.hubs[h] = true
	}
	s.transports = availableTransports(opts)
	return s, nil
}

// ServeHTTP routes negotiate and WebSocket requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if hub, ok := strings.CutSuffix(path, "/negotiate"); ok {
		if name := lastSegment(hub); s.hubs[name] {
			s.serveNegotiate(w, r, name)
			return
		}
	}
	if name := lastSegment(path); s.hubs[name] {
		s.serveConnect(w, r, name)
		return
	}
	http.Error(w, "no hub at this path", http.StatusNotFound)
}

// Wait blocks until every connection served so far has ended, or ctx ends.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StopAccepting makes the server refuse new negotiates and connections with
// 503. It is idempotent.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	if !s.stopping {
		close(s.stopCh)
	}
	s.stopping = true
	s.mu.Unlock()
}

func (s *Server) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.active.Add(1)
	return true
}

func lastSegment(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// cors answers whether negotiate may go on for r's Origin (checkOrigin)
// and, for an allowed cross-origin request, sets the CORS headers.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) error {
	cross, err := checkOrigin(r, s.opts.AllowedOrigins)
	if err != nil {
		return err
	}
	if cross {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
	}
	return nil
}

// checkOrigin decides for negotiate and the WebSocket upgrade alike whether
// r's Origin may use the hubs: a request without one (not from a browser),
// one whose Origin host is the request's Host, or one whose host matches a
// pattern (path.Match, case-insensitive; a pattern with "://" is matched
// against scheme://host, as coder/websocket's OriginPatterns are). cross
// reports an allowed cross-origin request. The Origin must be an http or
// https URL of a host only, as browsers send it: "null", a path, a query,
// a fragment or userinfo is refused, so "http://evil.com?.example.com"
// can never match "*.example.com".
func checkOrigin(r *http.Request, patterns []string) (cross bool, err error) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false, nil
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Opaque != "" || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return false, fmt.Errorf("origin %q is not an http or https origin (scheme://host[:port])", origin)
	}
	if strings.EqualFold(u.Host, r.Host) {
		return false, nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := matchOrigin(p, target); ok {
			return true, nil
		}
	}
	return false, fmt.Errorf("origin %q not allowed", origin)
}

func (s *Server) serveNegotiate(w http.ResponseWriter, r *http.Request, hub string) {
	if err := s.cors(w, r); err != nil {
		s.log.Debug("negotiate refused", "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if r.Method == http.MethodOptions {
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Requested-With, X-SignalR-User-Agent")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "negotiate requires POST", http.StatusMethodNotAllowed)
		return
	}
	if !drainNegotiateBody(w, r) {
		return
	}
	identity, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer s.active.Done()
	version, err := protocol.ParseNegotiateVersion(queryValue(r.URL.RawQuery, "negotiateVersion"))
	var resp protocol.NegotiateResponse
	if err != nil {
		resp.Error = err.Error()
	} else {
		stateful := s.statefulRequested(version, r.URL.RawQuery)
		token, id := s.tokens.mintWith(version == 0, stateful, identity.UserID)
		resp = protocol.NegotiateResponse{
			NegotiateVersion:    version,
			ConnectionID:        id,
			ConnectionToken:     token,
			AvailableTransports: s.transports,
		}
		resp.UseStatefulReconnect = stateful
	}
	bp := scratchBuffers.Get().(*[]byte)
	body := protocol.AppendNegotiateResponse((*bp)[:0], resp)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	if cap(body) <= 4<<10 {
		*bp = body[:0]
		scratchBuffers.Put(bp)
	}
}

// defaultPollTimeout is Options.PollTimeout's default, ASP.NET's.
const defaultPollTimeout = 90 * time.Second

// availableTransports is what negotiate offers, in SignalR's order of
// preference: WebSockets, then Server-Sent Events (text only), then long
// polling.
func availableTransports(opts Options) []protocol.AvailableTransport {
	ts := []protocol.AvailableTransport{{Transport: transportWebSockets, TransferFormats: []string{"Text", "Binary"}}}
	if !opts.DisableServerSentEvents {
		ts = append(ts, protocol.AvailableTransport{Transport: transportServerSentEvents, TransferFormats: []string{"Text"}})
	}
	if !opts.DisableLongPolling {
		ts = append(ts, protocol.AvailableTransport{Transport: transportLongPolling, TransferFormats: []string{"Text", "Binary"}})
	}
	return ts
}

// maxNegotiateBody bounds a negotiate request's body. SignalR clients send
// none; whatever is sent is read and dropped, so the connection can carry
// the next request.
const maxNegotiateBody = 4 << 10

// drainNegotiateBody reads and drops r's body, at most maxNegotiateBody
// bytes; when it answers false it has written the refusal (413 for a
// longer body, 400 for one that could not be read).
func drainNegotiateBody(w http.ResponseWriter, r *http.Request) bool {
	tooLarge := func() bool {
		w.Header().Set("Connection", "close")
		http.Error(w, fmt.Sprintf("negotiate takes no body (at most %d bytes)", maxNegotiateBody), http.StatusRequestEntityTooLarge)
		return false
	}
	if r.ContentLength > maxNegotiateBody {
		return tooLarge()
	}
	_, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxNegotiateBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return tooLarge()
	case err != nil:
		w.Header().Set("Connection", "close")
		http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// admit counts the request as active and authenticates it; when it
// answers false it has written the refusal (503 while shutting down, 401)
// and the request is not counted. Otherwise the caller must call
// s.active.Done when the request ends.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (auth.Identity, bool) {
	if !s.begin() {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return auth.Identity{}, false
	}
	identity, err := s.opts.Authenticator.Authenticate(r)
	if err != nil {
		s.active.Done()
		s.unauthorized(w, err)
		return auth.Identity{}, false
	}
	return identity, true
}

func (s *Server) unauthorized(w http.ResponseWriter, err error) {
	s.log.Debug("request refused", "err", err)
	w.Header().Set("WWW-Authenticate", "Bearer")
	status := http.StatusUnauthorized
	if !errors.Is(err, auth.ErrUnauthorized) {
		status = http.StatusForbidden
	}
	http.Error(w, err.Error(), status)
}

// ValidOriginPattern reports whether p is usable as one of
// Options.AllowedOrigins: a path.Match pattern without syntax errors. It
// is safe for concurrent use.
func ValidOriginPattern(p string) error {
	if _, err := matchOrigin(p, "x"); err != nil {
		return fmt.Errorf("bad allowed origin pattern %q: %w", p, err)
	}
	return nil
}

func matchOrigin(pattern, host string) (bool, error) {
	return path.Match(strings.ToLower(pattern), strings.ToLower(host))
}
