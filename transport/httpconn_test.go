package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/protocol"
)

const rs = "\x1e"

// httpServer serves hub "chat" over every transport with sessions that
// record what they get; conns receives each connection's outbound side.
type httpServer struct {
	t     *testing.T
	s     *Server
	url   string
	sess  *recordingSession
	conns chan *conn.Conn
}

func newHTTPServer(t *testing.T, tune func(*Options)) *httpServer {
	t.Helper()
	hs := &httpServer{t: t, sess: &recordingSession{got: make(chan protocol.Message, 64), closed: make(chan error, 8)}, conns: make(chan *conn.Conn, 8)}
	opts := testOptions(func(_ context.Context, req ConnectRequest) (Session, error) {
		hs.conns <- req.Conn
		return hs.sess, nil
	})
	if tune != nil {
		tune(&opts)
	}
	s, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		stopServerWithin(t, s, 20*time.Second)
	})
	hs.s, hs.url = s, srv.URL+"/hubs/chat"
	return hs
}

// token negotiates a connection token.
func (hs *httpServer) token() string {
	tok, _ := hs.s.tokens.mint(false, "")
	return tok
}

// do sends one request and returns its status and body.
func (hs *httpServer) do(method, query string, body []byte, header ...string) (int, string) {
	hs.t.Helper()
	req, err := http.NewRequest(method, hs.url+"?"+query, bytes.NewReader(body))
	if err != nil {
		hs.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		hs.t.Fatalf("%s ?%s: %v", method, query, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (hs *httpServer) expect(method, query string, body []byte, wantStatus int, wantBody string) string {
	hs.t.Helper()
	status, got := hs.do(method, query, body)
	if status != wantStatus || (wantBody != "*" && got != wantBody) {
		hs.t.Fatalf("%s ?%s %q = %d %q; want %d %q", method, query, body, status, got, wantStatus, wantBody)
	}
	return got
}

// open makes a long-polling connection through its first poll and the
// handshake; the handshake answer is polled.
func (hs *httpServer) open(proto string) (string, *conn.Conn) {
	hs.t.Helper()
	tok := hs.token()
	hs.expect("GET", "id="+tok, nil, http.StatusOK, "")
	hs.expect("POST", "id="+tok, []byte(`{"protocol":"`+proto+`","version":1}`+rs), http.StatusOK, "")
	hs.expect("GET", "id="+tok, nil, http.StatusOK, "{}"+rs)
	return tok, <-hs.conns
}

// TestLongPollingRoundTrip: the first poll answers at once, the handshake
// POST opens the connection, a poll returns its answer; a message POSTed
// reaches the session, one queued by the server comes back in a poll;
// DELETE ends it (202) and a later poll gets 204.
func TestLongPollingRoundTrip(t *testing.T) {
	t.Parallel()
	hs := newHTTPServer(t, nil)
	tok, c := hs.open("json")
	hs.expect("POST", "id="+tok, []byte(`{"type":1,"target":"Echo","arguments":["hi"],"invocationId":"1"}`+rs), http.StatusOK, "")
	if m := (<-hs.sess.got).(*protocol.Invocation); m.Target != "Echo" {
		t.Fatalf("session got %+v", m)
	}
	if err := c.Send(&protocol.Completion{InvocationID: "1", Result: "hi", HasResult: true}); err != nil {
		t.Fatal(err)
	}
	hs.expect("GET", "id="+tok, nil, http.StatusOK, `{"type":3,"invocationId":"1","result":"hi"}`+rs)
	hs.expect("DELETE", "id="+tok, nil, http.StatusAccepted, "")
	if err := <-hs.sess.closed; err != nil {
		t.Fatalf("closed with %v, want a normal close", err)
	}
	hs.expect("GET", "id="+tok, nil, http.StatusNoContent, "")
}

// TestLongPollingMessagePack: binary frames go out as raw bytes.
func TestLongPollingMessagePack(t *testing.T) {
	t.Parallel()
	hs := newHTTPServer(t, nil)
	tok, c := hs.open("messagepack")
	_ = c.Send(&protocol.Completion{InvocationID: "7", Result: int64(5), HasResult: true})
	body := hs.expect("GET", "id="+tok, nil, http.StatusOK, "*")
	msgs, _, err := protocol.MessagePack.ParseMessages([]byte(body), 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("poll body %q: %v, %d messages", body, err, len(msgs))
	}
	hs.expect("DELETE", "id="+tok, nil, http.StatusAccepted, "")
}

// TestPollTimeoutAnswersEmpty: a poll with nothing to send is answered
// 200 empty after PollTimeout, and the connection goes on.
func TestPollTimeoutAnswersEmpty(t *testing.T) {
	t.Parallel()
	hs := newHTTPServer(t, func(o *Options) { o.PollTimeout = 50 * time.Millisecond })
	tok, c := hs.open("json")
	hs.expect("GET", "id="+tok, nil, http.StatusOK, "")
	_ = c.Send(&protocol.Ping{})
	hs.expect("GET", "id="+tok, nil, http.StatusOK, `{"type":6}`+rs)
	hs.expect("DELETE", "id="+tok, nil, http.StatusAccepted, "")
}

// TestNoPollWithinClientTimeoutCloses: a client that stops polling is
// closed after ClientTimeout, though a poll outlasting it is not.
func TestNoPollWithinClientTimeoutCloses(t *testing.T) {
	t.Parallel()
	hs := newHTTPServer(t, func(o *Options) {
		o.ClientTimeout = 300 * time.Millisecond
		o.PollTimeout = 600 * time.Millisecond
	})
	tok, _ := hs.open("json")
	hs.expect("GET", "id="+tok, nil, http.StatusOK, "") // outlasts the client timeout
	select {
	case err := <-hs.sess.closed:
		t.Fatalf("closed during or right after a poll: %v", err)
	default:
	}
	err := <-hs.sess.closed // no poll now
	if err == nil || !strings.Contains(err.Error(), "the client sent nothing for 300ms") {
		t.Fatalf("closed with %v, want the client timeout", err)
	}
}

// TestHTTPTransportBadInput: each bad request gets its status and text,
// and the connection it names (if any) goes on unless the input was its
// own protocol error.
func TestHTTPTransportBadInput(t *testing.T) {
	t.Parallel()
	hs := newHTTPServer(t, func(o *Options) { o.MaxMessageSize = 1000 })
	polling := make(chan string, 64)
	hs.s.pollHook = func(tok string) {
		select {
		case polling <- tok:
		default:
		}
	}
	unknown := hs.token()
	hs.expect("GET", "", nil, http.StatusBadRequest, "Connection ID required\n")
	hs.expect("GET", "id=garbage", nil, http.StatusNotFound, msgNoConnection+": connection token is not valid\n")
	hs.expect("POST", "id="+unknown, []byte("{}"+rs), http.StatusNotFound, msgNoConnection+"\n")
	hs.expect("DELETE", "id="+unknown, nil, http.StatusNotFound, msgNoConnection+"\n")
	hs.expect("PUT", "id="+unknown, nil, http.StatusMethodNotAllowed, "PUT is not a SignalR transport request\n")

	tok, _ := hs.open("json")
	// A body over the bound (8 x MaxMessageSize, at least 1 MiB): 413,
	// and the connection is untouched.
	hs.expect("POST", "id="+tok, bytes.Repeat([]byte("x"), 1<<20+1), http.StatusRequestEntityTooLarge, "a send body is limited to 1048576 bytes\n")
	hs.expect("POST", "id="+tok, []byte(`{"type":6}`+rs), http.StatusOK, "")

	// Two polls at once: the older is ended with 204.
	for len(polling) > 0 { // the polls of open
		<-polling
	}
	first := make(chan int, 1)
	go func() { status, _ := hs.do("GET", "id="+tok, nil); first <- status }()
	waitPolling(t, polling, tok)
	var second int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); second, _ = hs.do("GET", "id="+tok, nil) }()
	if status := <-first; status != http.StatusNoContent {
		t.Fatalf("the older of two polls got %d, want 204", status)
	}
	// A malformed message: the connection is closed with a Close message
	// saying why, delivered to the outstanding poll.
	hs.expect("POST", "id="+tok, []byte(`{"type":1,"target":`+rs), http.StatusOK, "")
	wg.Wait()
	if second != http.StatusOK {
		t.Fatalf("the newer poll got %d, want 200 with the Close message", second)
	}
	if err := <-hs.sess.closed; err == nil {
		t.Fatal("a malformed message closed the connection without an error")
	}
	hs.expect("GET", "id="+tok, nil, http.StatusNoContent, "")

	// A bad handshake is answered with its error, then the end.
	bad := hs.token()
	hs.expect("GET", "id="+bad, nil, http.StatusOK, "")
	hs.expect("POST", "id="+bad, []byte(`{"protocol":"nope","version":1}`+rs), http.StatusOK, "")
	hs.expect("GET", "id="+bad, nil, http.StatusOK, `{"error":"The protocol 'nope' is not supported."}`+rs)
	hs.expect("GET", "id="+bad, nil, http.StatusNoContent, "")

	// A token already used by a connection that ended cannot be reused.
	hs.expect("GET", "id="+bad, nil, http.StatusNoContent, "")
}

// waitPolling waits until a poll of tok's connection is outstanding
// (polling is the server's pollHook channel).
func waitPolling(t *testing.T, polling <-chan string, tok string) {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case got := <-polling:
			if got == tok {
				return
			}
		case <-timer.C:
			t.Fatal("no poll outstanding within 10s")
		}
	}
}

// TestServerSentEvents: the stream opens with ":", carries the handshake
// answer and each frame as "data:" lines; MessagePack is refused; DELETE
// is not for SSE (400); the stream's end closes the connection.
func TestServerSentEvents(t *testing.T) {
	t.Parallel()
	hs := newHTTPServer(t, nil)
	for _, tc := range []struct{ proto, want string }{
		{"json", "data: {}" + rs + "\r\n\r\n"},
		{"messagepack", `data: {"error":"Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format."}` + rs + "\r\n\r\n"},
	} {
		tok := hs.token()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", hs.url+"?id="+tok, nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("event stream: %v %v", err, resp)
		}
		readExactly(t, resp.Body, ":\r\n")
		hs.expect("POST", "id="+tok, []byte(`{"protocol":"`+tc.proto+`","version":1}`+rs), http.StatusOK, "")
		readExactly(t, resp.Body, tc.want)
		if tc.proto == "json" {
			c := <-hs.conns
			hs.expect("DELETE", "id="+tok, nil, http.StatusBadRequest, "Cannot terminate this connection using the DELETE endpoint.\n")
			_ = c.Send(&protocol.Ping{})
			readExactly(t, resp.Body, "data: {\"type\":6}"+rs+"\r\n\r\n")
			cancel() // the client goes away
			if err := <-hs.sess.closed; err != nil {
				t.Fatalf("closed with %v, want a normal close", err)
			}
		}
		cancel()
		resp.Body.Close()
	}
}

func readExactly(t *testing.T, r io.Reader, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("reading %q: %v (got %q)", want, err, got)
	}
	if string(got) != want {
		t.Fatalf("stream gave %q, want %q", got, want)
	}
}

// TestSSEHandshakeBeforeStreamStarts: the connection is findable from the
// moment newHTTPConn registers it, before serveEventStream has set up its
// stream; a handshake POST arriving in that window (a client that does not
// wait for the stream's first bytes) must not find the stream missing.
// Before the fix the connection's socket was a nil *sseWriter and the
// handshake answer's write panicked (a nil dereference in the writer
// goroutine, which takes the process down).
func TestSSEHandshakeBeforeStreamStarts(t *testing.T) {
	t.Parallel()
	hs := newHTTPServer(t, nil)
	tok := hs.token()
	posted := make(chan int, 1)
	hs.s.connHook = func(got string) {
		if got != tok {
			return
		}
		go func() {
			req, _ := http.NewRequest("POST", hs.url+"?id="+tok, strings.NewReader(`{"protocol":"json","version":1}`+rs))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				posted <- 0
				return
			}
			resp.Body.Close()
			posted <- resp.StatusCode
		}()
		// The POST has opened the connection over the transport's socket
		// (Connect runs once conn.Open has it) before the stream is set up.
		select {
		case c := <-hs.conns:
			hs.conns <- c
		case <-time.After(10 * time.Second):
			t.Error("the handshake POST did not reach the hub")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", hs.url+"?id="+tok, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("event stream: %v %v", err, resp)
	}
	defer resp.Body.Close()
	readExactly(t, resp.Body, ":\r\n")
	readExactly(t, resp.Body, "data: {}"+rs+"\r\n\r\n")
	if st := <-posted; st != http.StatusOK {
		t.Fatalf("handshake POST: %d", st)
	}
	<-hs.conns
	cancel()
	if err := <-hs.sess.closed; err != nil {
		t.Fatalf("closed with %v, want a normal close", err)
	}
}

// TestRefusedHandshakeStaysRefused: after a refused handshake, a second
// POST with a valid handshake must not open the connection (the refusal
// is on its way to the client, which then ends the connection). Before the
// fix the second POST parsed a handshake again (the connection still had
// none) and attached the connection to its hub: OnConnected ran for a
// connection the client was told had failed, and the poll got both the
// refusal and the handshake answer.
func TestRefusedHandshakeStaysRefused(t *testing.T) {
	t.Parallel()
	hs := newHTTPServer(t, nil)
	tok := hs.token()
	hs.expect("GET", "id="+tok, nil, http.StatusOK, "")
	hs.expect("POST", "id="+tok, []byte(`{"protocol":"nope","version":1}`+rs), http.StatusOK, "")
	hs.expect("POST", "id="+tok, []byte(`{"protocol":"json","version":1}`+rs), http.StatusOK, "")
	status, body := hs.do("GET", "id="+tok, nil)
	if status != http.StatusOK || !strings.HasPrefix(body, `{"error":`) || strings.Contains(body, "{}"+rs) {
		t.Fatalf("poll after a refused handshake: %d %q, want only the refusal", status, body)
	}
	// The refusal ends the connection; no hub ever had it.
	hs.expect("GET", "id="+tok, nil, http.StatusNoContent, "")
	select {
	case c := <-hs.conns:
		t.Fatalf("a refused connection was opened: %s", c.ID())
	default:
	}
}
