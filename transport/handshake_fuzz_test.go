package transport

import (
	"bytes"
	"context"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/protocol"
)

// endSession collects what one connection receives and reports its end.
type endSession struct {
	mu     sync.Mutex
	got    []protocol.Message
	closed chan struct{}
}

func (s *endSession) Receive(m protocol.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, m)
}
func (s *endSession) Closed(error) { close(s.closed) }

// FuzzReadHandshake sends, over a real WebSocket, a handshake request
// followed by any bytes, cut into frames anywhere (the handshake split
// across frames, records sharing its frame): the client's first answer is
// the handshake answer, and the connection receives exactly the messages
// that parsing the bytes after the handshake at once gives (Pings aside),
// up to the first bad record, whose error ends the connection with a Close.
func FuzzReadHandshake(f *testing.F) {
	f.Add([]byte("{\"type\":1,\"target\":\"Echo\",\"arguments\":[1]}\x1e{\"type\":6}\x1e"), []byte{5, 30}, false)
	f.Add([]byte(""), []byte{1, 1, 1}, false)
	f.Add(hexBytes(f, "0f960180c0a548656c6c6f91a2686990029106"), []byte{33, 2}, true)
	f.Add([]byte("{\"type\":1}\x1e"), []byte{40}, false)
	f.Add([]byte("\x1e"), []byte{}, false)
	sessions := make(chan *endSession, 1)
	opts := testOptions(func(context.Context, ConnectRequest) (Session, error) {
		s := &endSession{closed: make(chan struct{})}
		sessions <- s
		return s, nil
	})
	opts.MaxMessageSize = 256
	s, err := NewServer(opts)
	if err != nil {
		f.Fatal(err)
	}
	srv := httptest.NewServer(s)
	f.Cleanup(func() {
		srv.Close()
		stopServerWithin(f, s, 10*time.Second)
	})
	f.Fuzz(func(t *testing.T, data, cuts []byte, binary bool) {
		p, typ := protocol.HubProtocol(protocol.JSON), websocket.MessageText
		if binary {
			p, typ = protocol.MessagePack, websocket.MessageBinary
		}
		stream := append(protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: p.Name(), Version: 1}), data...)
		var frames [][]byte
		for _, c := range cuts {
			n := min(int(c), len(stream))
			frames, stream = append(frames, stream[:n]), stream[n:]
		}
		frames = append(frames, stream)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, srv.URL+"/hubs/chat", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		for _, fr := range frames {
			if ws.Write(ctx, typ, fr) != nil {
				break // the server closed: a bad record
			}
		}
		_, answer, err := ws.Read(ctx)
		if err != nil || !bytes.HasPrefix(answer, []byte("{}\x1e")) {
			t.Fatalf("first frame %q, %v; want the handshake answer", answer, err)
		}
		var written []byte
		written = append(written, answer[3:]...)
		// Close from the client's side; what the server sent until then
		// (a Close message after a bad record) is read first.
		closed := make(chan error, 1)
		go func() { closed <- ws.Close(websocket.StatusNormalClosure, "") }()
		var sess *endSession
		select {
		case sess = <-sessions:
		case <-ctx.Done():
			t.Fatal("no connection reached the hub")
		}
		select {
		case <-sess.closed:
		case <-ctx.Done():
			t.Fatal("the connection did not end")
		}
		<-closed
		msgs, _, perr := p.ParseMessages(data, opts.MaxMessageSize)
		var want []protocol.Message
		for _, m := range msgs {
			if _, ping := m.(*protocol.Ping); !ping {
				want = append(want, m)
			}
		}
		sess.mu.Lock()
		got := sess.got
		sess.mu.Unlock()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("frames %q: the hub got %d messages, parsing at once gives %d (err %v)", frames, len(got), len(want), perr)
		}
		if perr != nil && len(written) > 0 {
			// The Close came in the answer's frame (it does when the record
			// was bad before the writer took the answer); FuzzReadFrame checks
			// the Close in every case.
			out, _, err := p.ParseMessages(written, 0)
			cl, ok := (*protocol.Close)(nil), err == nil && len(out) == 1
			if ok {
				cl, ok = out[0].(*protocol.Close)
			}
			if !ok || !strings.Contains(cl.Error, "Connection closed with an error") {
				t.Fatalf("after a bad record the server wrote %q", written)
			}
		}
	})
}
