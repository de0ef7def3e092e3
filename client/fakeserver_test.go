package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/hubfabric/hubfabric/protocol"
)

// fakeServer is a small SignalR server for the tests: negotiate, the
// WebSocket transport, both hub protocols, and a few hub methods:
//
//	Echo(x) x            Add(a, b int) int       Fail() -> error "boom"
//	Void()               Hang() (never answers)  Split(x) x, in two frames  Notify(args...) -> client "NOTIFY"(args...)
//	Batch() -> client "seq"(1), "seq"(2), "seq"(3) in one frame
//	AskClient(target, x) -> client result of target(x), relayed
//	CloseMe(allowReconnect bool) -> Close{"bye", allowReconnect}
//	Drop() -> the WebSocket is cut without a close handshake
//	Count(n) stream 0..n-1       Endless() stream: one item, then waits for cancel
//	FailStream() stream: one item, then error "stream broke"
//	Sum(upload stream of ints) int
//
// Every handshake response is followed, in the same frame, by an
// invocation of the client method "Welcome" with the connection id.
type fakeServer struct {
	srv    *httptest.Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Hooks, set before dialing; called on server goroutines.
	onNegotiate func(r *http.Request)
	onConnect   func(r *http.Request, connID string)
	onMessage   func(connID string, m protocol.Message)

	rejectNegotiate atomic.Bool // answer negotiate with 503

	mu     sync.Mutex
	n      int
	tokens map[string]string // connection token -> connection id
}

func newFakeServer() *fakeServer {
	f := &fakeServer{tokens: make(map[string]string)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hub/negotiate", f.negotiate)
	mux.HandleFunc("POST /redirect/negotiate", func(w http.ResponseWriter, r *http.Request) {
		if f.onNegotiate != nil {
			f.onNegotiate(r)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(protocol.AppendNegotiateResponse(nil, protocol.NegotiateResponse{
			NegotiateVersion: 1, URL: f.srv.URL + "/hub?tenant=blue", AccessToken: "redirected-token",
		}))
	})
	mux.HandleFunc("POST /bad/negotiate", func(w http.ResponseWriter, r *http.Request) {
		w.Write(protocol.AppendNegotiateResponse(nil, protocol.NegotiateResponse{Error: "nope"}))
	})
	mux.HandleFunc("GET /hub", f.serveWS)
	mux.HandleFunc("GET /hserr", func(w http.ResponseWriter, r *http.Request) {
		f.wg.Add(1)
		defer f.wg.Done()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		if _, _, err := c.Read(f.ctx); err != nil {
			return
		}
		c.Write(f.ctx, websocket.MessageText, protocol.AppendHandshakeResponse(nil, "The protocol 'x' is not supported."))
		c.Close(websocket.StatusNormalClosure, "")
	})
	f.srv = httptest.NewServer(mux)
	return f
}

// url returns the URL of the hub at path ("/hub").
func (f *fakeServer) url(path string) string { return f.srv.URL + path }

// Close stops the server and joins every connection goroutine.
func (f *fakeServer) Close() {
	f.srv.Close()
	f.cancel()
	f.wg.Wait()
}

func (f *fakeServer) newConnection() (id, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	id, token = fmt.Sprintf("conn-%d", f.n), fmt.Sprintf("token-%d", f.n)
	f.tokens[token] = id
	return id, token
}

func (f *fakeServer) negotiate(w http.ResponseWriter, r *http.Request) {
	if f.onNegotiate != nil {
		f.onNegotiate(r)
	}
	if f.rejectNegotiate.Load() {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	id, token := f.newConnection()
	w.Header().Set("Content-Type", "application/json")
	w.Write(protocol.AppendNegotiateResponse(nil, protocol.NegotiateResponse{
		NegotiateVersion: 1, ConnectionID: id, ConnectionToken: token,
		AvailableTransports: []protocol.AvailableTransport{
			{Transport: "WebSockets", TransferFormats: []string{"Text", "Binary"}},
			{Transport: "LongPolling", TransferFormats: []string{"Text", "Binary"}},
		},
	}))
}

// fakeConn is the server side of one connection; it runs on one goroutine.
type fakeConn struct {
	f      *fakeServer
	ws     *websocket.Conn
	id     string
	proto  protocol.HubProtocol
	frame  websocket.MessageType
	asks   map[string]string // client-result id -> invocation id waiting for it
	sums   map[string]*upload
	nextID int
}

type upload struct {
	invocationID string
	sum          int
}

func (f *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	f.wg.Add(1)
	defer f.wg.Done()
	var id string
	if token := r.URL.Query().Get("id"); token != "" {
		f.mu.Lock()
		id = f.tokens[token]
		delete(f.tokens, token)
		f.mu.Unlock()
		if id == "" {
			http.Error(w, "No Connection with that ID", http.StatusNotFound)
			return
		}
	} else {
		id, _ = f.newConnection()
	}
	if f.onConnect != nil {
		f.onConnect(r, id)
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	c := &fakeConn{f: f, ws: ws, id: id, asks: map[string]string{}, sums: map[string]*upload{}}
	// Server-side failures show up in the tests as client errors.
	_ = c.serve()
}

var errDropped = errors.New("dropped")

func (c *fakeConn) serve() error {
	_, data, err := c.ws.Read(c.f.ctx)
	if err != nil {
		return err
	}
	req, _, err := protocol.ParseHandshakeRequest(data, 0)
	if err != nil {
		return err
	}
	p, ok := protocol.Lookup(req.Protocol)
	if !ok {
		return c.ws.Write(c.f.ctx, websocket.MessageText, protocol.AppendHandshakeResponse(nil, protocol.HandshakeErrorUnsupportedProtocol(req.Protocol)))
	}
	c.proto, c.frame = p, websocket.MessageText
	if p.TransferFormat() == protocol.TransferBinary {
		c.frame = websocket.MessageBinary
	}
	out := protocol.AppendHandshakeResponse(nil, "")
	out, err = p.AppendMessage(out, &protocol.Invocation{Target: "Welcome", Arguments: []any{c.id}})
	if err != nil {
		return err
	}
	if err := c.ws.Write(c.f.ctx, c.frame, out); err != nil {
		return err
	}
	var buf []byte
	for {
		_, data, err := c.ws.Read(c.f.ctx)
		if err != nil {
			return err
		}
		buf = append(buf, data...)
		msgs, n, err := p.ParseMessages(buf, 1<<20)
		if err != nil {
			return err
		}
		buf = append([]byte(nil), buf[n:]...)
		for _, m := range msgs {
			if c.f.onMessage != nil {
				c.f.onMessage(c.id, m)
			}
			if err := c.handle(m); err != nil {
				return err
			}
		}
	}
}

func (c *fakeConn) send(ms ...protocol.Message) error {
	var out []byte
	for _, m := range ms {
		var err error
		if out, err = c.proto.AppendMessage(out, m); err != nil {
			return err
		}
	}
	return c.ws.Write(c.f.ctx, c.frame, out)
}

func (c *fakeConn) arg(m []any, i int, v any) error {
	if i >= len(m) {
		return fmt.Errorf("missing argument %d", i)
	}
	return c.proto.Unmarshal(m[i].(protocol.RawValue), v)
}

func (c *fakeConn) handle(m protocol.Message) error {
	switch m := m.(type) {
	case *protocol.Invocation:
		return c.invoke(m.InvocationID, m.Target, m.Arguments, m.StreamIDs)
	case *protocol.StreamInvocation:
		return c.stream(m.InvocationID, m.Target, m.Arguments)
	case *protocol.StreamItem:
		if u := c.sums[m.InvocationID]; u != nil {
			var n int
			if err := c.proto.Unmarshal(m.Item.(protocol.RawValue), &n); err != nil {
				return err
			}
			u.sum += n
		}
	case *protocol.Completion:
		if u := c.sums[m.InvocationID]; u != nil {
			delete(c.sums, m.InvocationID)
			return c.send(&protocol.Completion{InvocationID: u.invocationID, Result: u.sum, HasResult: true})
		}
		if inv, ok := c.asks[m.InvocationID]; ok {
			delete(c.asks, m.InvocationID)
			return c.send(&protocol.Completion{InvocationID: inv, Error: m.Error, Result: m.Result, HasResult: m.HasResult})
		}
	}
	return nil
}

func (c *fakeConn) complete(id string, result any, err error) error {
	if id == "" {
		return nil
	}
	if err != nil {
		return c.send(&protocol.Completion{InvocationID: id, Error: err.Error()})
	}
	return c.send(&protocol.Completion{InvocationID: id, Result: result, HasResult: result != nil})
}

func (c *fakeConn) invoke(id, target string, args []any, streamIDs []string) error {
	switch target {
	case "Echo":
		return c.complete(id, args[0], nil)
	case "Add":
		var a, b int
		if err := errors.Join(c.arg(args, 0, &a), c.arg(args, 1, &b)); err != nil {
			return c.complete(id, nil, err)
		}
		return c.complete(id, a+b, nil)
	case "Fail":
		return c.complete(id, nil, errors.New("boom"))
	case "Void":
		return c.complete(id, nil, nil)
	case "Hang":
		return nil
	case "Split": // Echo, with the Completion cut across two frames
		b, err := c.proto.AppendMessage(nil, &protocol.Completion{InvocationID: id, Result: args[0], HasResult: true})
		if err != nil {
			return err
		}
		if err := c.ws.Write(c.f.ctx, c.frame, b[:len(b)/2]); err != nil {
			return err
		}
		return c.ws.Write(c.f.ctx, c.frame, b[len(b)/2:])
	case "Notify":
		if err := c.send(&protocol.Invocation{Target: "NOTIFY", Arguments: args}); err != nil {
			return err
		}
		return c.complete(id, nil, nil)
	case "Batch":
		if err := c.send(
			&protocol.Invocation{Target: "seq", Arguments: []any{1}},
			&protocol.Invocation{Target: "seq", Arguments: []any{2}},
			&protocol.Invocation{Target: "seq", Arguments: []any{3}},
		); err != nil {
			return err
		}
		return c.complete(id, nil, nil)
	case "AskClient":
		var clientTarget string
		if err := c.arg(args, 0, &clientTarget); err != nil {
			return c.complete(id, nil, err)
		}
		c.nextID++
		askID := "ask-" + strconv.Itoa(c.nextID)
		c.asks[askID] = id
		return c.send(&protocol.Invocation{InvocationID: askID, Target: clientTarget, Arguments: args[1:]})
	case "CloseMe":
		var allow bool
		if err := c.arg(args, 0, &allow); err != nil {
			return c.complete(id, nil, err)
		}
		if err := c.send(&protocol.Close{Error: "bye", AllowReconnect: allow}); err != nil {
			return err
		}
		c.ws.Close(websocket.StatusNormalClosure, "")
		return errDropped
	case "Drop":
		c.ws.CloseNow()
		return errDropped
	case "Sum":
		if len(streamIDs) != 1 {
			return c.complete(id, nil, fmt.Errorf("Sum wants 1 stream, got %d", len(streamIDs)))
		}
		c.sums[streamIDs[0]] = &upload{invocationID: id}
		return nil
	}
	return c.complete(id, nil, fmt.Errorf("Failed to invoke '%s' due to an error on the server. HubException: Method does not exist.", target))
}

func (c *fakeConn) stream(id, target string, args []any) error {
	switch target {
	case "Count":
		var n int
		if err := c.arg(args, 0, &n); err != nil {
			return c.complete(id, nil, err)
		}
		ms := make([]protocol.Message, 0, n+1)
		for i := range n {
			ms = append(ms, &protocol.StreamItem{InvocationID: id, Item: i})
		}
		return c.send(append(ms, &protocol.Completion{InvocationID: id})...)
	case "Endless":
		return c.send(&protocol.StreamItem{InvocationID: id, Item: "first"})
	case "FailStream":
		return c.send(&protocol.StreamItem{InvocationID: id, Item: "first"}, &protocol.Completion{InvocationID: id, Error: "stream broke"})
	}
	return c.complete(id, nil, fmt.Errorf("Failed to invoke '%s' due to an error on the server. HubException: Method does not exist.", target))
}
