package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/protocol"
)

// limitServer serves hub "chat" with MaxMessageSize limit; every
// connection's messages go to the returned session.
func limitServer(t *testing.T, limit int) (*httptest.Server, *recordingSession) {
	t.Helper()
	sess := &recordingSession{got: make(chan protocol.Message, 64), closed: make(chan error, 1)}
	opts := testOptions(func(context.Context, ConnectRequest) (Session, error) { return sess, nil })
	opts.MaxMessageSize = limit
	s, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() {
		srv.Close()
		stopServerWithin(t, s, 10*time.Second)
	})
	return srv, sess
}

// dialHub opens a WebSocket to srv's hub "chat" and completes the
// handshake for proto ("json" or "messagepack").
func dialHub(t *testing.T, ctx context.Context, srv *httptest.Server, proto string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, srv.URL+"/hubs/chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(-1)
	hs := protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: proto, Version: 1})
	if err := ws.Write(ctx, websocket.MessageText, hs); err != nil {
		t.Fatal(err)
	}
	_, answer, err := ws.Read(ctx)
	if err != nil || string(answer) != "{}\x1e" {
		t.Fatalf("handshake answer %q, %v", answer, err)
	}
	return ws
}

// invocation is one framed Invocation of "Echo" whose single string
// argument makes the record about size bytes long.
func invocation(t *testing.T, p protocol.HubProtocol, size int) []byte {
	t.Helper()
	rec, err := p.AppendMessage(nil, &protocol.Invocation{Target: "Echo", Arguments: []any{strings.Repeat("x", size)}})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// A record over MaxMessageSize gets SignalR's Close message naming the
// limit, then a normal WebSocket close, whatever its size: before the
// reader counted bytes itself, coder/websocket's read limit (4x the limit
// plus 4 KiB) answered the larger ones with a bare close 1009 and the
// client never learnt why.
func TestOversizedMessageGetsCloseMessageAtAnySize(t *testing.T) {
	t.Parallel()
	const limit = 32 << 10
	for _, proto := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
		for _, size := range []int{limit + 1, 4*limit + 8<<10, 100 * limit} {
			t.Run(fmt.Sprintf("%s/%d", proto.Name(), size), func(t *testing.T) {
				t.Parallel()
				srv, sess := limitServer(t, limit)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				ws := dialHub(t, ctx, srv, proto.Name())
				typ := websocket.MessageText
				if proto.TransferFormat() == protocol.TransferBinary {
					typ = websocket.MessageBinary
				}
				written := make(chan error, 1)
				go func() { written <- ws.Write(ctx, typ, invocation(t, proto, size)) }()

				_, data, err := ws.Read(ctx)
				if err != nil {
					t.Fatalf("read: %v, want the Close message (a bare WebSocket close means the read limit cut in first)", err)
				}
				msgs, _, err := proto.ParseMessages(data, 0)
				if err != nil || len(msgs) != 1 {
					t.Fatalf("got %q (%v), want one Close message", data, err)
				}
				cl, ok := msgs[0].(*protocol.Close)
				if !ok {
					t.Fatalf("got %#v, want a Close message", msgs[0])
				}
				if cl.AllowReconnect || !strings.Contains(cl.Error, "limit 32768") {
					t.Fatalf("Close = %+v, want allowReconnect false and an error naming the limit 32768", cl)
				}
				_, _, err = ws.Read(ctx)
				if st := websocket.CloseStatus(err); st != websocket.StatusNormalClosure {
					t.Fatalf("after the Close message: %v (status %d), want a normal close", err, st)
				}
				if err := <-written; err != nil && !errors.Is(err, context.Canceled) {
					// The server drains the rest of the frame in its close
					// handshake, so the write completes; a reset would show here.
					t.Logf("client write ended with %v", err)
				}
				select {
				case m := <-sess.got:
					t.Fatalf("the oversized message reached the session: %T", m)
				default:
				}
			})
		}
	}
}

// One frame may carry many records, each within the limit, together far
// over it (and over the old WebSocket read limit of 4x the limit): all of
// them arrive.
func TestFrameOfManyRecordsWithinTheLimit(t *testing.T) {
	t.Parallel()
	const limit = 32 << 10
	for _, proto := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
		t.Run(proto.Name(), func(t *testing.T) {
			t.Parallel()
			srv, sess := limitServer(t, limit)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ws := dialHub(t, ctx, srv, proto.Name())
			typ := websocket.MessageText
			if proto.TransferFormat() == protocol.TransferBinary {
				typ = websocket.MessageBinary
			}
			const n = 20
			var frame []byte
			for range n {
				frame = append(frame, invocation(t, proto, limit-100)...)
			}
			if err := ws.Write(ctx, typ, frame); err != nil {
				t.Fatal(err)
			}
			for i := range n {
				select {
				case m := <-sess.got:
					if inv, ok := m.(*protocol.Invocation); !ok || inv.Target != "Echo" {
						t.Fatalf("message %d = %#v, want the Echo invocation", i, m)
					}
				case err := <-sess.closed:
					t.Fatalf("connection closed after %d of %d records: %v", i, n, err)
				case <-ctx.Done():
					t.Fatalf("only %d of %d records arrived", i, n)
				}
			}
			ws.Close(websocket.StatusNormalClosure, "")
			<-sess.closed
		})
	}
}

// Records are a byte stream across frames: the handshake may share its
// frame with records, a record may end in a later frame, and a handshake
// over the limit is refused with the handshake error.
func TestRecordsAcrossFrames(t *testing.T) {
	t.Parallel()
	const limit = 32 << 10
	srv, sess := limitServer(t, limit)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, srv.URL+"/hubs/chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	big := invocation(t, protocol.JSON, limit-100) // spans several read chunks
	first := append(protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: "json", Version: 1}), big...)
	first = append(first, big[:len(big)/3]...)
	for _, f := range [][]byte{first, big[len(big)/3 : len(big)/2], append(big[len(big)/2:], big...)} {
		if err := ws.Write(ctx, websocket.MessageText, f); err != nil {
			t.Fatal(err)
		}
	}
	if _, answer, err := ws.Read(ctx); err != nil || string(answer) != "{}\x1e" {
		t.Fatalf("handshake answer %q, %v", answer, err)
	}
	for i := range 3 {
		select {
		case m := <-sess.got:
			inv, ok := m.(*protocol.Invocation)
			if !ok || inv.Target != "Echo" || len(inv.Arguments) != 1 || len(inv.Arguments[0].(protocol.RawValue)) != limit-100+2 {
				t.Fatalf("message %d = %T, want the whole Echo invocation", i, m)
			}
		case err := <-sess.closed:
			t.Fatalf("connection closed after %d records: %v", i, err)
		case <-ctx.Done():
			t.Fatalf("only %d of 3 records arrived", i)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
	<-sess.closed

	ws2, _, err := websocket.Dial(ctx, srv.URL+"/hubs/chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.CloseNow()
	go func() {
		_ = ws2.Write(ctx, websocket.MessageText, []byte(`{"protocol":"json","version":1,"x":"`+strings.Repeat("y", 10*limit)))
	}()
	_, answer, err := ws2.Read(ctx)
	if err != nil || !strings.Contains(string(answer), `"error"`) {
		t.Fatalf("oversized handshake answered %q, %v; want a handshake error", answer, err)
	}
}
