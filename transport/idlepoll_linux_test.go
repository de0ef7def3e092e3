//go:build linux && (amd64 || arm64)

package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/protocol"
)

// dialRaw opens a WebSocket to hub chat over a plain TCP connection, so a
// test decides how the client's bytes are framed and when they are sent,
// and completes the JSON handshake.
func dialRaw(t *testing.T, srv *httptest.Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write([]byte(rawUpgradeRequest)); err != nil {
		t.Fatal(err)
	}
	br := readSwitchingProtocols(t, nc)
	sendFrame(t, nc, `{"protocol":"json","version":1}`+"\x1e")
	if got := readServerFrame(t, br); got != "{}\x1e" {
		t.Fatalf("handshake answer %q", got)
	}
	return nc, br
}

// sendFrame writes payload to nc as one masked text frame.
func sendFrame(t *testing.T, nc net.Conn, payload string) {
	t.Helper()
	if _, err := nc.Write(maskedTextFrame(payload)); err != nil {
		t.Fatal(err)
	}
}

// parkingServer returns a server whose WebSockets count as busy while
// their frames come within linger (0: they park whenever they are read
// up), and a channel that gets, at every park, the size of the parked
// connection's read buffer.
func parkingServer(t *testing.T, linger time.Duration, connect func(context.Context, ConnectRequest) (Session, error)) (*Server, *httptest.Server, chan int) {
	t.Helper()
	s, err := NewServer(testOptions(connect))
	if err != nil {
		t.Fatal(err)
	}
	s.readLinger = linger
	parks := make(chan int, 64)
	s.poller.onPark = func(wc *wsConnection) { parks <- wc.waiter.br.Size() }
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv, parks
}

// parkedClient starts a parkingServer whose connections go to a
// recordingSession, dials it (dialRaw) and waits for the park that follows
// the handshake.
func parkedClient(t *testing.T, linger time.Duration) (*recordingSession, *Server, net.Conn, chan int) {
	t.Helper()
	sess := &recordingSession{got: make(chan protocol.Message, 8), closed: make(chan error, 1)}
	s, srv, parks := parkingServer(t, linger, func(context.Context, ConnectRequest) (Session, error) { return sess, nil })
	nc, _ := dialRaw(t, srv)
	waitFor(t, parks, "the park after the handshake")
	return sess, s, nc, parks
}

// A quiet WebSocket parks with no goroutine and a bufio-sized read buffer,
// and is read again whenever its client speaks: every record arrives once
// and in order, records sharing a frame and a record split over frames
// sent apart included; the client closing a parked connection ends it.
func TestQuietClientParksAndIsReadAgain(t *testing.T) {
	sess, s, nc, parks := parkedClient(t, 0)
	parked := func(what string) {
		t.Helper()
		if size := waitFor(t, parks, what); size != parkedReadBufferSize {
			t.Fatalf("%s: the parked connection holds a read buffer of %d bytes, want %d", what, size, parkedReadBufferSize)
		}
	}
	for i := range 10 {
		target := fmt.Sprintf("M%d", i)
		sendFrame(t, nc, invocationJSON(target))
		waitInvocation(t, sess.got, target)
		parked("the park after " + target)
	}
	sendFrame(t, nc, invocationJSON("A")+invocationJSON("B"))
	waitInvocation(t, sess.got, "A")
	waitInvocation(t, sess.got, "B")
	parked("the park after A and B")
	split := invocationJSON("C")
	sendFrame(t, nc, split[:10])
	parked("the park holding half a record")
	sendFrame(t, nc, split[10:])
	waitInvocation(t, sess.got, "C")
	parked("the park after C")

	nc.Close()
	if err := waitFor(t, sess.closed, "the connection's end"); err != nil {
		t.Fatalf("closed with %v, want a normal end", err)
	}
	stopServer(t, s)
}

// The node closing a parked connection (here the connection's own Close,
// as the keep-alive timeout or a hub would) ends it: the client gets the
// Close message, the session its end with the node's reason, and the
// server's Wait joins; whether the client's close answer carries a status
// or not (browsers send 1000, a bare close frame is 1005).
func TestNodeClosesParkedConnection(t *testing.T) {
	for _, answer := range []struct {
		name  string
		frame []byte
	}{
		// Close frames masked with key 1, 2, 3, 4.
		{"status 1000", []byte{0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2}},
		{"no status", []byte{0x88, 0x80, 1, 2, 3, 4}},
	} {
		t.Run(answer.name, func(t *testing.T) {
			sess := &recordingSession{got: make(chan protocol.Message, 8), closed: make(chan error, 1)}
			conns := make(chan *conn.Conn, 1)
			s, srv, parks := parkingServer(t, 0, func(_ context.Context, req ConnectRequest) (Session, error) {
				conns <- req.Conn
				return sess, nil
			})
			nc, br := dialRaw(t, srv)
			c := waitFor(t, conns, "the connect")
			waitFor(t, parks, "the park after the handshake")

			c.Close("Goodbye from the node.", false)
			if got := readServerFrame(t, br); !strings.Contains(got, `"type":7`) || !strings.Contains(got, "Goodbye from the node.") {
				t.Fatalf("the client got %q, want the Close message", got)
			}
			// The WebSocket close frame follows; the client answers it and
			// the node's close handshake, which reads the answer itself
			// while the connection is parked, completes.
			if b, err := br.ReadByte(); err != nil || b != 0x88 {
				t.Fatalf("after the Close message: %#x, %v; want a close frame", b, err)
			}
			if _, err := nc.Write(answer.frame); err != nil {
				t.Fatal(err)
			}
			// The session hears the node's reason, not the parked
			// reader's closed socket.
			if err := waitFor(t, sess.closed, "the connection's end"); err == nil || !strings.Contains(err.Error(), "Goodbye from the node.") {
				t.Fatalf("the session heard %v, want the node's reason", err)
			}
			stopServer(t, s)
		})
	}
}

// panickingSession panics on its second message.
type panickingSession struct {
	n      int
	first  chan struct{}
	closed chan error
}

func (p *panickingSession) Receive(protocol.Message) {
	p.n++
	if p.n == 1 {
		close(p.first)
		return
	}
	panic("hub bug")
}

func (p *panickingSession) Closed(err error) { p.closed <- err }

// A panic on the reader started for a parked connection closes that
// connection, and the session hears that its reading panicked; the
// server goes on and Wait still joins. Also when the connection cannot
// park (its reader then waits for the socket itself).
func TestPanickingReaderAfterParkIsClosedNotFatal(t *testing.T) {
	for _, parking := range []bool{true, false} {
		t.Run(fmt.Sprintf("parks=%v", parking), func(t *testing.T) {
			sess := &panickingSession{first: make(chan struct{}), closed: make(chan error, 1)}
			s, srv, parks := parkingServer(t, 0, func(context.Context, ConnectRequest) (Session, error) { return sess, nil })
			if !parking {
				s.poller.broken = errors.New("test: parking is off")
			}
			nc, br := dialRaw(t, srv)
			sendFrame(t, nc, invocationJSON("first"))
			waitFor(t, sess.first, "the first message")
			if parking {
				waitFor(t, parks, "a park")
			}
			sendFrame(t, nc, invocationJSON("second"))
			_, _ = io.Copy(io.Discard, br) // until the node closes the socket (EOF or a reset)
			if err := waitFor(t, sess.closed, "the connection's end"); !errors.Is(err, errReadPanicked) {
				t.Fatalf("the session heard %v, want %v", err, errReadPanicked)
			}
			stopServer(t, s)
		})
	}
}

// A client whose connection is reset while parked ends it with an error,
// as it does while its reader is in a read: looking at the socket must not
// swallow the reset.
func TestResetWhileParkedIsAnError(t *testing.T) {
	sess, s, nc, _ := parkedClient(t, 0)
	if err := nc.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	nc.Close() // a reset, not a FIN
	if err := waitFor(t, sess.closed, "the connection's end"); err == nil {
		t.Fatal("a reset connection ended as a normal close")
	}
	stopServer(t, s)
}

// A client that sends more often than the linger is busy: it is waited for
// in a read, not parked after each frame.
func TestBusyClientIsNotParked(t *testing.T) {
	sess, s, nc, parks := parkedClient(t, time.Hour)
	for i := range 5 {
		target := fmt.Sprintf("M%d", i)
		sendFrame(t, nc, invocationJSON(target))
		waitInvocation(t, sess.got, target)
	}
	// The first frame after a park finds the client quiet before it, so
	// one more park may follow it; none after that.
	if n := len(parks); n > 1 {
		t.Fatalf("a client sending within the linger parked %d times", n)
	}
	nc.Close()
	waitFor(t, sess.closed, "the connection's end")
	stopServer(t, s)
}
