package transport

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recordingSession collects what a connection receives.
type recordingSession struct {
	got    chan protocol.Message
	closed chan error
}

func (r *recordingSession) Receive(m protocol.Message) { r.got <- m }
func (r *recordingSession) Closed(err error)           { r.closed <- err }

// readServerFrame reads one short, final, unmasked text frame and returns
// its payload.
func readServerFrame(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(br, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 0x81 || hdr[1]&0x80 != 0 || hdr[1]&0x7f > 125 {
		t.Fatalf("frame header %x, want a short final unmasked text frame", hdr)
	}
	body := make([]byte, hdr[1]&0x7f)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// stopServer stops s accepting and waits (at most 10 s) for its connections to end.
func stopServer(tb testing.TB, s *Server) {
	tb.Helper()
	stopServerWithin(tb, s, 10*time.Second)
}

// stopServerWithin stops s accepting and fails tb unless its connections
// end within d. Safe in a Cleanup.
func stopServerWithin(tb testing.TB, s *Server, d time.Duration) {
	tb.Helper()
	s.StopAccepting()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.Wait(ctx); err != nil {
		tb.Errorf("Wait: %v", err)
	}
}

// rawUpgradeRequest is a WebSocket upgrade request for hub chat, for tests
// that write a client's bytes themselves.
const rawUpgradeRequest = "GET /hubs/chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// readSwitchingProtocols reads the answer to rawUpgradeRequest from nc,
// fails the test unless it is 101, and returns the reader that holds
// whatever followed it.
func readSwitchingProtocols(t *testing.T, nc net.Conn) *bufio.Reader {
	t.Helper()
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s", resp.Status)
	}
	return br
}

// invocationJSON is a JSON record of a non-blocking invocation of target.
func invocationJSON(target string) string {
	return fmt.Sprintf(`{"type":1,"target":%q,"arguments":[]}`+"\x1e", target)
}

// waitFor returns the next value on ch, failing the test after 10 s.
func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not within 10 s", what)
		panic("unreachable")
	}
}

// waitInvocation fails the test unless got's next message is an
// invocation of target.
func waitInvocation(t *testing.T, got <-chan protocol.Message, target string) {
	t.Helper()
	m := waitFor(t, got, "invocation "+target)
	if inv, ok := m.(*protocol.Invocation); !ok || inv.Target != target {
		t.Fatalf("received %#v, want invocation %s", m, target)
	}
}

// maskedTextFrame frames payload as a client would (masked, one frame).
func maskedTextFrame(payload string) []byte {
	key := [4]byte{1, 2, 3, 4}
	f := []byte{0x81, 0x80 | byte(len(payload))}
	f = append(f, key[:]...)
	for i := range len(payload) {
		f = append(f, payload[i]^key[i%4])
	}
	return f
}

// A client may send its SignalR handshake in the same TCP segment as the
// upgrade request. Those bytes are buffered by net/http before the
// WebSocket exists and must reach the handshake, not be dropped.
func TestHandshakeSentWithUpgradeRequest(t *testing.T) {
	sess := &recordingSession{got: make(chan protocol.Message, 4), closed: make(chan error, 1)}
	connected := make(chan ConnectRequest, 1)
	s, err := NewServer(testOptions(func(_ context.Context, req ConnectRequest) (Session, error) {
		connected <- req
		return sess, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Handshake and a first invocation, all in one write with the request.
	early := append([]byte(rawUpgradeRequest), maskedTextFrame(`{"protocol":"json","version":1}`+"\x1e")...)
	early = append(early, maskedTextFrame(`{"type":1,"target":"Hello","arguments":[]}`+"\x1e")...)
	if _, err := conn.Write(early); err != nil {
		t.Fatal(err)
	}
	br := readSwitchingProtocols(t, conn)
	if got := readServerFrame(t, br); got != "{}\x1e" {
		t.Fatalf("handshake answer %q", got)
	}
	req := <-connected
	if req.Request == nil || req.Request.URL.Path != "/hubs/chat" {
		t.Fatalf("connect request does not carry the upgrade request: %+v", req.Request)
	}
	select {
	case m := <-sess.got:
		inv, ok := m.(*protocol.Invocation)
		if !ok || inv.Target != "Hello" {
			t.Fatalf("received %#v, want the Hello invocation", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the invocation sent with the upgrade request never arrived")
	}

	// The connection lives on after its HTTP handler returned; Wait joins it
	// once the client is gone.
	conn.Close()
	<-sess.closed
	stopServer(t, s)
}

// A panic on a connection's goroutine (here in the Connect callback) closes
// that connection and is logged; the server goes on and Wait still joins.
func TestPanickingConnectionIsClosedNotFatal(t *testing.T) {
	s, err := NewServer(testOptions(func(context.Context, ConnectRequest) (Session, error) {
		panic("hub bug")
	}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.URL+"/hubs/chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"protocol":"json","version":1}`+"\x1e")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatal("the connection whose Connect panicked was not closed")
	}
	s.StopAccepting()
	if err := s.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

// testOptions serves hub "chat" with connect and SignalR's usual limits.
func testOptions(connect func(context.Context, ConnectRequest) (Session, error)) Options {
	return Options{
		Hubs: []string{"chat"}, Connect: connect, TokenSecret: []byte("test secret"), Authenticator: auth.Anonymous,
		TokenTTL: 5 * time.Minute, KeepAliveInterval: 15 * time.Second, ClientTimeout: 30 * time.Second,
		HandshakeTimeout: 15 * time.Second, MaxMessageSize: 32 << 10, MaxOutboundBytes: 1 << 20,
	}
}

func TestOptionsNeedEveryLimit(t *testing.T) {
	t.Parallel()
	connect := func(context.Context, ConnectRequest) (Session, error) { return nil, nil }
	for _, tc := range []struct {
		want  string
		unset func(*Options)
	}{
		{"TokenTTL must be positive", func(o *Options) { o.TokenTTL = 0 }},
		{"KeepAliveInterval must be positive", func(o *Options) { o.KeepAliveInterval = 0 }},
		{"ClientTimeout must be positive", func(o *Options) { o.ClientTimeout = -1 }},
		{"HandshakeTimeout must be positive", func(o *Options) { o.HandshakeTimeout = 0 }},
		{"MaxMessageSize must be positive", func(o *Options) { o.MaxMessageSize = 0 }},
		{"MaxOutboundBytes must be positive", func(o *Options) { o.MaxOutboundBytes = 0 }},
		{"TokenSecret is required", func(o *Options) { o.TokenSecret = nil }},
		{"Connect is required", func(o *Options) { o.Connect = nil }},
		{"Authenticator is required", func(o *Options) { o.Authenticator = nil }},
	} {
		o := testOptions(connect)
		tc.unset(&o)
		if _, err := NewServer(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewServer = %v, want an error saying %q", err, tc.want)
		}
	}
}

// TestStatefulReconnectOutlivesTheTokenTTL: the TTL bounds how long a negotiated token may
// open a connection, not how long a stateful connection may reconnect with it. The client
// reconnects an hour after negotiate (the node's clock says so) and resumes: the node answers
// with its Sequence message, and the session is not ended.
func TestStatefulReconnectOutlivesTheTokenTTL(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	sess := &recordingSession{got: make(chan protocol.Message, 16), closed: make(chan error, 1)}
	opts := testOptions(func(context.Context, ConnectRequest) (Session, error) { return sess, nil })
	opts.StatefulReconnect, opts.StatefulReconnectBufferSize, opts.StatefulReconnectWindow = true, 1<<16, time.Minute
	opts.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/hubs/chat/negotiate?negotiateVersion=1&useStatefulReconnect=true", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	nr, err := protocol.ParseNegotiateResponse(body)
	if err != nil || !nr.UseStatefulReconnect {
		t.Fatalf("negotiate: %q %v", body, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := srv.URL + "/hubs/chat?id=" + nr.ConnectionToken
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: "json", Version: 2})); err != nil {
		t.Fatal(err)
	}
	if _, data, err := c.Read(ctx); err != nil || string(data) != "{}\x1e" {
		t.Fatalf("handshake answer %q, %v", data, err)
	}
	// A message reaches the session once the connection reads its socket as
	// a stateful one: only then can it resume.
	inv, _ := protocol.JSON.AppendMessage(nil, &protocol.Invocation{Target: "Hello"})
	if err := c.Write(ctx, websocket.MessageText, inv); err != nil {
		t.Fatal(err)
	}
	<-sess.got
	c.CloseNow() // the socket drops

	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	c2, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("the reconnect an hour later: %v", err)
	}
	defer c2.CloseNow()
	seq, _ := protocol.JSON.AppendMessage(nil, &protocol.Sequence{SequenceID: 1})
	if err := c2.Write(ctx, websocket.MessageText, seq); err != nil {
		t.Fatal(err)
	}
	_, data, err := c2.Read(ctx)
	if err != nil {
		t.Fatalf("the resumed socket: %v", err)
	}
	msgs, _, err := protocol.JSON.ParseMessages(data, 1<<20)
	if err != nil || len(msgs) == 0 {
		t.Fatalf("the resumed socket sent %q (%v)", data, err)
	}
	if _, ok := msgs[0].(*protocol.Sequence); !ok {
		t.Fatalf("the resumed socket began with %#v, want the node's Sequence", msgs[0])
	}
	select {
	case err := <-sess.closed:
		t.Fatalf("the session ended: %v", err)
	default:
	}
	closeMsg, _ := protocol.JSON.AppendMessage(nil, &protocol.Close{})
	if err := c2.Write(ctx, websocket.MessageText, closeMsg); err != nil { // a graceful end: no window
		t.Fatal(err)
	}
	c2.Close(websocket.StatusNormalClosure, "")
	<-sess.closed
	s.StopAccepting()
	if err := s.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

// A client that is quiet after its handshake does not keep its upgrade
// request reachable: coder/websocket holds the context of the last read,
// so the handshake must not be read with the request's. A value in the
// request's context is watched with a cleanup; it must be collected while
// the connection is still open.
func TestQuietConnectionLetsGoOfItsRequest(t *testing.T) {
	type ctxKey struct{}
	sess := &recordingSession{got: make(chan protocol.Message, 4), closed: make(chan error, 1)}
	connected := make(chan struct{}, 1)
	s, err := NewServer(testOptions(func(context.Context, ConnectRequest) (Session, error) {
		connected <- struct{}{}
		return sess, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	freed := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		watched := new([256]byte)
		runtime.AddCleanup(watched, func(ch chan struct{}) { close(ch) }, freed)
		s.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, watched)))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dialHub(t, ctx, srv, "json")
	waitFor(t, connected, "connect")
	// The setup lets go of the request just after it answered the
	// handshake: collect until the cleanup has run, a bounded number of
	// times.
	collected := false
	for i := 0; i < 50 && !collected; i++ {
		runtime.GC()
		select {
		case <-freed:
			collected = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !collected {
		t.Fatal("the upgrade request's context is still reachable from an open, quiet connection")
	}
	c.CloseNow()
	<-sess.closed
	stopServer(t, s)
}
