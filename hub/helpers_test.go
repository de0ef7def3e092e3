package hub_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// testNode is a started node behind an httptest server.
type testNode struct {
	node *hub.Node
	srv  *httptest.Server
	url  string // hub base, e.g. http://127.0.0.1:1234/hubs/
}

// startNode starts a node serving hubs (name -> value) and registers its
// shutdown in t.Cleanup.
func startNode(t testing.TB, cfg hub.Config, hubs map[string]any) *testNode {
	t.Helper()
	n, err := hub.New(cfg)
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	for name, h := range hubs {
		if err := n.Register(name, h); err != nil {
			t.Fatalf("Register(%q): %v", name, err)
		}
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", n.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		srv.Close()
	})
	return &testNode{node: n, srv: srv, url: srv.URL + "/hubs/"}
}

// rawConn is a WebSocket speaking the SignalR protocol by hand, for tests
// that need to send what a well-behaved client never would.
type rawConn struct {
	t       testing.TB
	ws      *websocket.Conn
	proto   protocol.HubProtocol
	buf     []byte
	pending []protocol.Message
	ctx     context.Context
}

// negotiate POSTs negotiate and returns the response.
func negotiate(t testing.TB, base, hubName string, header http.Header) (int, protocol.NegotiateResponse, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+hubName+"/negotiate?negotiateVersion=1", nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("negotiate: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, protocol.NegotiateResponse{}, string(body)
	}
	nr, err := protocol.ParseNegotiateResponse(body)
	if err != nil {
		t.Fatalf("negotiate response %q: %v", body, err)
	}
	return resp.StatusCode, nr, string(body)
}

// dialRaw opens a WebSocket to hubName (query is appended as is) without
// handshaking.
func dialRaw(t testing.TB, base, hubName, query string, header http.Header) (*rawConn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	u := "ws" + strings.TrimPrefix(base, "http") + hubName
	if query != "" {
		u += "?" + query
	}
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		return nil, resp, err
	}
	ws.SetReadLimit(1 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	return &rawConn{t: t, ws: ws, ctx: ctx}, resp, nil
}

// handshake sends the handshake for proto and checks the answer is {}.
func (c *rawConn) handshake(p protocol.HubProtocol) {
	c.t.Helper()
	c.proto = p
	c.writeText(string(protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: p.Name(), Version: 1})))
	resp := c.handshakeResponse()
	if resp.Error != "" {
		c.t.Fatalf("handshake refused: %s", resp.Error)
	}
}

// handshakeResponse reads the handshake answer.
func (c *rawConn) handshakeResponse() protocol.HandshakeResponse {
	c.t.Helper()
	for {
		resp, n, err := protocol.ParseHandshakeResponse(c.buf)
		if err == nil {
			c.buf = c.buf[n:]
			return resp
		}
		c.readFrame()
	}
}

func (c *rawConn) readFrame() {
	c.t.Helper()
	_, data, err := c.ws.Read(c.ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	c.buf = append(c.buf, data...)
}

func (c *rawConn) writeText(s string) {
	c.t.Helper()
	if err := c.ws.Write(c.ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawConn) writeBinary(b []byte) {
	c.t.Helper()
	if err := c.ws.Write(c.ctx, websocket.MessageBinary, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// send encodes m with the connection's protocol and writes it as one frame.
func (c *rawConn) send(m protocol.Message) {
	c.t.Helper()
	b, err := c.proto.AppendMessage(nil, m)
	if err != nil {
		c.t.Fatalf("encode: %v", err)
	}
	if c.proto.TransferFormat() == protocol.TransferBinary {
		c.writeBinary(b)
	} else {
		c.writeText(string(b))
	}
}

// nextAny returns the next message, Pings included.
func (c *rawConn) nextAny() protocol.Message {
	c.t.Helper()
	for len(c.pending) == 0 {
		msgs, n, err := c.proto.ParseMessages(c.buf, 1<<20)
		if err != nil {
			c.t.Fatalf("parse %q: %v", c.buf, err)
		}
		c.buf = c.buf[n:]
		c.pending = append(c.pending, msgs...)
		if len(c.pending) == 0 {
			c.readFrame()
		}
	}
	m := c.pending[0]
	c.pending = c.pending[1:]
	return m
}

// next returns the next message that is not a Ping.
func (c *rawConn) next() protocol.Message {
	c.t.Helper()
	for {
		if m := c.nextAny(); m.MessageType() != protocol.TypePing {
			return m
		}
	}
}

// expectClose reads until a Close message and returns it; the socket must
// then close.
func (c *rawConn) expectClose() *protocol.Close {
	c.t.Helper()
	for {
		m := c.nextAny()
		if cl, ok := m.(*protocol.Close); ok {
			return cl
		}
	}
}

// bind decodes a raw value from this connection.
func (c *rawConn) bind(v any, out any) {
	c.t.Helper()
	raw, ok := v.(protocol.RawValue)
	if !ok {
		c.t.Fatalf("value %T is not raw", v)
	}
	if err := c.proto.Unmarshal(raw, out); err != nil {
		c.t.Fatalf("unmarshal %q: %v", raw, err)
	}
}

func protoJSON() protocol.HubProtocol { return protocol.JSON }

// callWhoami invokes the hub's Whoami over a raw connection.
func callWhoami(t testing.TB, c *rawConn) string {
	t.Helper()
	c.send(&protocol.Invocation{InvocationID: "who", Target: "whoami"})
	comp, ok := c.next().(*protocol.Completion)
	if !ok || comp.Error != "" {
		t.Fatalf("whoami: %#v", comp)
	}
	var id string
	c.bind(comp.Result, &id)
	return id
}
