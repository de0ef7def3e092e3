package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/internal/conn"
)

// tryWaitGuard bounds every wait of the try-write tests: it only turns a
// write that waits (or a client that never gets its bytes) into a
// failure, it is never how long a test takes.
const tryWaitGuard = 10 * time.Second

// The server's SO_SNDBUF and the client's SO_RCVBUF are made small, so
// that a client that does not read fills the connection after some tens
// of KiB. The receive buffer is not as small as the send buffer: a window
// under loopback's MSS makes the sender crawl once the client reads
// (seconds for 200 KiB).
const (
	serverSendBuffer    = 4 << 10
	clientReceiveBuffer = 32 << 10
)

// tryPair is a loopback TCP connection whose server side is under a
// frameWriter in try mode (try set, blocking unset) and whose client does
// not read until the test starts a reader.
type tryPair struct {
	server, client *net.TCPConn
	fw             *frameWriter
	bw             *bufio.Writer // as coder/websocket writes into fw
	want           []byte        // every byte the frameWriter accepted, in order
}

func newTryPair(t *testing.T) *tryPair {
	t.Helper()
	server, client := tcpPair(t)
	p := &tryPair{server: server, client: client}
	if err := p.server.SetWriteBuffer(serverSendBuffer); err != nil {
		t.Fatal(err)
	}
	if err := p.client.SetReadBuffer(clientReceiveBuffer); err != nil {
		t.Fatal(err)
	}
	p.fw = newFrameWriter(p.server)
	if p.fw.raw == nil {
		t.Fatal("newFrameWriter over a TCP socket did not reach its descriptor")
	}
	p.fw.try.Store(true)
	p.bw = bufio.NewWriterSize(p.fw, writeBufferSize)
	return p
}

// tcpPair returns both ends of a loopback TCP connection, closed when the
// test ends.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var s net.Conn
	select {
	case s = <-accepted:
	case err := <-acceptErr:
		t.Fatal(err)
	case <-time.After(tryWaitGuard):
		t.Fatal("timed out accepting the loopback connection")
	}
	t.Cleanup(func() { s.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// tryPayload is frame i's payload of n bytes: distinct per frame and per
// position, so that a lost, repeated or reordered byte shows.
func tryPayload(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*131 + j*7 + j>>8)
	}
	return b
}

// writeFrame writes one unmasked server frame the way coder/websocket
// does (header, payload, flush through the writeBufferSize bufio.Writer,
// so a long frame reaches fw in pieces that it holds) and, when fw
// accepted it, adds it to what the client must receive.
func (p *tryPair) writeFrame(opcode byte, payload []byte) error {
	frame := append(frameHeader(opcode, len(payload), false), payload...)
	if _, err := p.bw.Write(frame[:len(frame)-len(payload)]); err != nil {
		return err
	}
	if _, err := p.bw.Write(payload); err != nil {
		return err
	}
	if err := p.bw.Flush(); err != nil {
		return err
	}
	p.want = append(p.want, frame...)
	return nil
}

// spillLen is how many bytes fw keeps for a flush.
func (p *tryPair) spillLen() int { return spilledBytes(p.fw) }

// spilledBytes is how many bytes fw keeps for a flush.
func spilledBytes(fw *frameWriter) int {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return len(fw.spill)
}

// withoutWaiting runs fn, which must not wait for the client, and fails
// the test if it does not return: the sockets are then closed, which ends
// a write stuck on them, so no goroutine outlives the test.
func (p *tryPair) withoutWaiting(t *testing.T, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(tryWaitGuard):
		p.server.Close()
		p.client.Close()
		<-done
		t.Fatalf("%s waited for a client that does not read (still blocked after %s)", what, tryWaitGuard)
	}
}

// tryFrame writes one frame in try mode, failing the test if it waits
// for the client or fails.
func (p *tryPair) tryFrame(t *testing.T, opcode byte, payload []byte) {
	t.Helper()
	p.withoutWaiting(t, fmt.Sprintf("a try-mode write of a %d-byte frame", len(payload)), func() error {
		return p.writeFrame(opcode, payload)
	})
}

// fillUntilSpilled writes frames of the given payload sizes, in turn,
// until fw spills (the socket did not take a frame whole), without ever
// waiting for the client.
func (p *tryPair) fillUntilSpilled(t *testing.T, sizes []int) {
	t.Helper()
	const limit = 1 << 20 // far beyond the socket's buffers
	p.withoutWaiting(t, "try-mode writes into a full socket", func() error {
		for i := 0; len(p.want) < limit; i++ {
			if err := p.writeFrame(0x2, tryPayload(i, sizes[i%len(sizes)])); err != nil {
				return err
			}
			if p.fw.spilled() {
				return nil
			}
		}
		return errors.New("no spill after 1 MiB written to a client that does not read")
	})
}

// startReader starts the client reading exactly n bytes, within
// tryWaitGuard; the returned func waits for them.
func (p *tryPair) startReader(t *testing.T, n int) func() []byte {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	if err := p.client.SetReadDeadline(time.Now().Add(tryWaitGuard)); err != nil {
		t.Fatal(err)
	}
	go func() {
		b := make([]byte, n)
		k, err := io.ReadFull(p.client, b)
		done <- result{b[:k], err}
	}()
	waited := false
	var res result
	wait := func() result {
		if !waited {
			res, waited = <-done, true
		}
		return res
	}
	t.Cleanup(func() {
		p.client.Close() // ends the reader if the test failed before waiting
		wait()
	})
	return func() []byte {
		t.Helper()
		r := wait()
		if r.err != nil {
			t.Fatalf("client read %d of %d bytes: %v", len(r.b), n, r.err)
		}
		return r.b
	}
}

// checkStream fails the test unless got is exactly p.want, naming the
// first byte that differs.
func (p *tryPair) checkStream(t *testing.T, got []byte) {
	t.Helper()
	if bytes.Equal(got, p.want) {
		return
	}
	i := 0
	for i < len(got) && i < len(p.want) && got[i] == p.want[i] {
		i++
	}
	t.Fatalf("client received %d bytes, want %d; they differ from byte %d", len(got), len(p.want), i)
}

// flushToReader lets the client read, flushes what was spilled (waiting
// at most tryWaitGuard) and checks that the client got exactly the
// expected stream and nothing after it.
func (p *tryPair) flushToReader(t *testing.T) {
	t.Helper()
	got := p.startReader(t, len(p.want))
	if err := p.server.SetWriteDeadline(time.Now().Add(tryWaitGuard)); err != nil {
		t.Fatal(err)
	}
	if err := p.fw.flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	p.checkStream(t, got())
	p.checkNothingMore(t)
}

// checkNothingMore closes the server side and fails the test if the
// client gets any byte after what it already read.
func (p *tryPair) checkNothingMore(t *testing.T) {
	t.Helper()
	p.server.Close()
	if err := p.client.SetReadDeadline(time.Now().Add(tryWaitGuard)); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if n, err := p.client.Read(b[:]); n != 0 || err != io.EOF {
		t.Fatalf("after the expected stream the client read %d more bytes (%v), want EOF", n, err)
	}
}

// In try mode (try set, blocking unset) frames written to a client that
// does not read never wait: once its socket is full, what it does not
// take is spilled. flush then waits for the client and delivers
// everything, byte for byte and in order, the frames written after the
// first spill included.
func TestTryWriteSpillsWithoutWaitingThenFlushes(t *testing.T) {
	p := newTryPair(t)
	// Frames that fit in bufio's buffer, and longer ones that reach the
	// frameWriter in pieces (held, then joined).
	sizes := []int{1, 100, 240, 300, 1000, 5000}
	p.tryFrame(t, 0x2, tryPayload(-1, 100))
	if p.fw.spilled() {
		t.Fatal("the first 100-byte frame into an empty socket was spilled")
	}
	// Frames smaller than the socket's buffers: the first spill comes
	// from a full socket, not from one frame too big for it.
	p.fillUntilSpilled(t, sizes)
	if len(p.want) < serverSendBuffer {
		t.Fatalf("spilled after %d bytes, less than the send buffer", len(p.want))
	}
	sizes = append(sizes, 70000) // a 64-bit length too
	// More frames after the spill: they queue behind it, still without
	// waiting.
	p.withoutWaiting(t, "try-mode writes behind a spill", func() error {
		for i := range 2 * len(sizes) {
			if err := p.writeFrame(0x2, tryPayload(1000+i, sizes[i%len(sizes)])); err != nil {
				return err
			}
		}
		return nil
	})
	if !p.fw.spilled() {
		t.Fatal("spilled() = false with the client not reading")
	}
	got := p.startReader(t, len(p.want))
	if err := p.server.SetWriteDeadline(time.Now().Add(tryWaitGuard)); err != nil {
		t.Fatal(err)
	}
	if err := p.fw.flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if p.fw.spilled() {
		t.Fatal("spilled() = true after flush")
	}
	p.checkStream(t, got())
	p.checkNothingMore(t)
}

// In try mode a control frame (Ping, Pong, Close) behind more than
// maxSpilledControl spilled bytes fails with errSpillFull and is not sent,
// while behind a smaller spill it is kept like any frame; data frames are
// still taken. Everything accepted then reaches the client in order.
func TestTryWriteRefusesControlFrameBehindFullSpill(t *testing.T) {
	p := newTryPair(t)
	p.fillSocket(t)
	p.tryFrame(t, 0x2, tryPayload(-5, 100))
	if n := p.spillLen(); n != 102 {
		t.Fatalf("a 102-byte frame into a full socket left %d bytes spilled, want 102", n)
	}
	// A Pong behind a small spill is kept.
	p.tryFrame(t, 0xA, []byte("small spill"))
	// Grow the spill past the bound with data frames, which are kept.
	p.withoutWaiting(t, "data frames behind a spill", func() error {
		for i := 0; p.spillLen() <= maxSpilledControl; i++ {
			if i > 10*maxSpilledControl {
				return errors.New("the spill does not grow with a client that does not read")
			}
			if err := p.writeFrame(0x1, tryPayload(i, 100)); err != nil {
				return err
			}
		}
		return nil
	})
	p.withoutWaiting(t, "control frames behind a full spill", func() error {
		for _, op := range []byte{0x9, 0xA, 0x8} {
			before := p.spillLen()
			// Written whole, as bufio passes a short control frame on,
			// and without p.bw, whose error would stick.
			frame := append(frameHeader(op, 2, false), 0x03, 0xe8)
			n, err := p.fw.Write(frame)
			if !errors.Is(err, errSpillFull) || n != 0 {
				return fmt.Errorf("control frame (opcode %#x) behind %d spilled bytes: Write = %d, %v; want 0, errSpillFull", op, before, n, err)
			}
			if after := p.spillLen(); after != before {
				return fmt.Errorf("refused control frame (opcode %#x) changed the spill from %d to %d bytes", op, before, after)
			}
		}
		return nil
	})
	// A data frame is still kept behind the full spill, and is framed
	// right after the refused control frames.
	p.tryFrame(t, 0x2, tryPayload(-2, 300))
	p.flushToReader(t)
}

// Once blocking is set, a write waits for the client and sends the
// spilled bytes first, then its frame: order is kept and nothing stays
// spilled.
func TestBlockingWriteSendsSpillFirst(t *testing.T) {
	for _, size := range []int{10, 5000} { // whole in one Write; in held pieces
		p := newTryPair(t)
		p.fillSocket(t)
		p.tryFrame(t, 0x2, tryPayload(-6, 3000))
		spilled := p.spillLen()
		if spilled != 3004 {
			t.Fatalf("a 3004-byte frame into a full socket left %d bytes spilled, want 3004", spilled)
		}
		last := tryPayload(-3, size)
		got := p.startReader(t, len(p.want)+len(frameHeader(0x2, size, false))+size)
		if err := p.server.SetWriteDeadline(time.Now().Add(tryWaitGuard)); err != nil {
			t.Fatal(err)
		}
		p.fw.blocking.Store(true)
		if err := p.writeFrame(0x2, last); err != nil {
			t.Fatalf("blocking write of %d bytes behind a %d-byte spill: %v", size, spilled, err)
		}
		if n := p.spillLen(); n != 0 {
			t.Fatalf("a blocking write of %d bytes left %d bytes spilled (%d before), want none", size, n, spilled)
		}
		p.checkStream(t, got())
		p.checkNothingMore(t)
	}
}

// fillSocket puts bytes straight into the server's socket, past the
// frameWriter (they stand for frames written earlier), until it takes
// nothing more: the client's receive window is closed and the send queue
// is over SO_SNDBUF, so the next write the socket gets is refused from its
// first byte. Nothing is spilled.
func (p *tryPair) fillSocket(t *testing.T) {
	t.Helper()
	// Far more than the client's receive buffer, written with a send
	// buffer that holds the rest: the window closes and stays closed.
	filler := tryPayload(-10, 8*clientReceiveBuffer)
	if err := p.server.SetWriteBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	p.withoutWaiting(t, "filling a 1 MiB send buffer", func() error {
		_, err := p.server.Write(filler)
		return err
	})
	p.want = append(p.want, filler...)
	// Shrunk back, the send queue still takes bytes into its last,
	// unsent packet until that is full.
	if err := p.server.SetWriteBuffer(serverSendBuffer); err != nil {
		t.Fatal(err)
	}
	chunk := tryPayload(-11, 4096)
	for total := 0; ; {
		n, err := p.fw.tryWrite(chunk)
		if err != nil {
			t.Fatal(err)
		}
		p.want = append(p.want, chunk[:n]...)
		if n == 0 {
			break
		}
		if total += n; total > 64<<20 {
			t.Fatal("the socket still takes bytes after 64 MiB with the client not reading")
		}
	}
	if p.fw.spilled() {
		t.Fatal("filling the socket past the frameWriter spilled")
	}
}

// A frame that reaches the frameWriter in pieces (its head held, then the
// rest) and finds the socket full is spilled whole, head first: nothing of
// it is lost or sent out of order.
func TestTryWriteSpillsAHeldFrameHeadWhole(t *testing.T) {
	p := newTryPair(t)
	p.fillSocket(t)
	const size = 5000 // bufio passes on writeBufferSize bytes, then the rest
	p.tryFrame(t, 0x2, tryPayload(-4, size))
	if got, want := p.spillLen(), len(frameHeader(0x2, size, false))+size; got != want {
		t.Fatalf("a %d-byte frame refused by a full socket left %d bytes spilled, want all of it", want, got)
	}
	if p.fw.held != nil {
		t.Fatalf("%d bytes still held after the frame was complete", len(*p.fw.held))
	}
	p.flushToReader(t)
}

// A try-mode write on a socket the client reset fails, whether the frame
// is passed on whole, in held pieces or behind a spill: the connection
// learns that the client is gone instead of spilling for ever.
func TestTryWriteReportsABrokenSocket(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		spill bool
	}{
		{"whole frame", 100, false},
		{"held pieces", 5000, false},
		{"behind a spill", 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTryPair(t)
			if tc.spill {
				p.fillUntilSpilled(t, []int{100})
			}
			if err := p.client.SetLinger(0); err != nil { // close with a reset
				t.Fatal(err)
			}
			if err := p.client.Close(); err != nil {
				t.Fatal(err)
			}
			p.withoutWaiting(t, "try-mode writes to a reset socket", func() error {
				const tries = 1000 // the reset arrives at once over loopback; this only bounds the loop
				for i := range tries {
					if err := p.writeFrame(0x2, tryPayload(i, tc.size)); err != nil {
						return nil
					}
				}
				return fmt.Errorf("%d frames written to a socket the client reset, without an error", tries)
			})
		})
	}
}

// Through coder/websocket: the socket a connection gets over a TCP
// WebSocket (wsSocket.withTryWrite) is a conn.TrySocket whose
// TryWriteFrame never waits and reports that it kept bytes once the
// client stops reading; Flush then delivers them, and WriteFrame waits
// and sends anything kept before its own message. The client gets every
// message whole and in order.
func TestTrySocketOverWebSocket(t *testing.T) {
	type accepted struct {
		ws *websocket.Conn
		fw *frameWriter
	}
	acceptedc := make(chan accepted, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sb := &smallBuffers{ResponseWriter: w}
		ws, err := websocket.Accept(sb, r, nil)
		if err != nil {
			t.Errorf("Accept: %v", err)
		}
		acceptedc <- accepted{ws, sb.fw}
	}))
	defer srv.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			err = c.(*net.TCPConn).SetReadBuffer(clientReceiveBuffer)
		}
		return c, err
	}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 2*tryWaitGuard)
	defer cancel()
	client, _, err := websocket.Dial(ctx, srv.URL, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseNow()
	client.SetReadLimit(-1)
	var a accepted
	select {
	case a = <-acceptedc:
	case <-time.After(tryWaitGuard):
		t.Fatal("timed out waiting for the server's side")
	}
	if a.ws == nil {
		t.FailNow()
	}
	defer a.ws.CloseNow()
	server := a.fw.conn.(*net.TCPConn)
	if err := server.SetWriteBuffer(serverSendBuffer); err != nil {
		t.Fatal(err)
	}
	sock, ok := wsSocket{ws: a.ws, typ: websocket.MessageBinary, fw: a.fw}.withTryWrite().(conn.TrySocket)
	if !ok {
		t.Fatal("withTryWrite over a TCP socket did not return a conn.TrySocket")
	}

	var want [][]byte
	// tryUntilKept calls TryWriteFrame, with the client not reading, until
	// it reports that the socket kept bytes and at least minSpill are
	// spilled; no call may wait for the client.
	tryUntilKept := func(minSpill int) {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			sizes := []int{10, 100, 1000, 5000}
			kept := false
			for i, total := len(want), 0; !kept || spilledBytes(a.fw) < minSpill; i++ {
				if total > 2<<20 {
					done <- fmt.Errorf("after 2 MiB to a client that does not read: a message reported incomplete %v, %d bytes spilled; want %d", kept, spilledBytes(a.fw), minSpill)
					return
				}
				msg := tryPayload(i, sizes[i%len(sizes)])
				complete, err := sock.TryWriteFrame(msg)
				if err != nil {
					done <- err
					return
				}
				want = append(want, msg)
				total += len(msg)
				kept = kept || !complete
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(tryWaitGuard):
			a.ws.CloseNow()
			client.CloseNow()
			<-done
			t.Fatalf("TryWriteFrame waited for a client that does not read (still blocked after %s)", tryWaitGuard)
		}
	}

	// The client reads what it is told to, in turns.
	var got [][]byte
	var readErr error
	turns := make(chan int) // how many messages to read next
	turnDone := make(chan struct{})
	quit := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			select {
			case n := <-turns:
				for range n {
					_, msg, err := client.Read(ctx)
					if err != nil {
						readErr = err
						return
					}
					got = append(got, msg)
				}
				turnDone <- struct{}{}
			case <-quit:
				return
			}
		}
	}()
	defer func() {
		close(quit)
		client.CloseNow() // ends a read if the test failed during it
		<-read
	}()
	readTurn := func(n int) {
		t.Helper()
		select {
		case turns <- n:
		case <-read:
			t.Fatalf("the client stopped reading: %v", readErr)
		}
	}
	awaitTurn := func() {
		t.Helper()
		select {
		case <-turnDone:
		case <-read:
			t.Fatalf("client read %d of %d messages: %v", len(got), len(want), readErr)
		}
	}
	if err := server.SetWriteDeadline(time.Now().Add(2 * tryWaitGuard)); err != nil {
		t.Fatal(err)
	}

	// Flush delivers what the socket kept.
	tryUntilKept(1)
	readTurn(len(want))
	if err := sock.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if a.fw.spilled() {
		t.Fatal("spilled() = true after Flush")
	}
	awaitTurn()

	// WriteFrame sends what was kept first and waits for all of it: far
	// more is spilled than one write that does not wait could send.
	tryUntilKept(8 * clientReceiveBuffer)
	last := tryPayload(-7, 3000)
	want = append(want, last)
	readTurn(len(want) - len(got))
	if err := sock.WriteFrame(context.Background(), last); err != nil {
		t.Fatalf("WriteFrame: %v", err)
	}
	if a.fw.spilled() || a.fw.blocking.Load() {
		t.Fatalf("after WriteFrame: spilled %v, blocking %v; want neither", a.fw.spilled(), a.fw.blocking.Load())
	}
	awaitTurn()
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d of %d: got %d bytes, want %d, or other bytes", i, len(want), len(got[i]), len(want[i]))
		}
	}
}

// writeData writes payload with writeDataFrame (coder/websocket passed by),
// without waiting for the client, and adds the frame to what the client
// must receive; it reports whether writeDataFrame took it, and fails the
// test when its complete does not say whether bytes were spilled.
func (p *tryPair) writeData(t *testing.T, opcode byte, payload []byte) bool {
	t.Helper()
	var handled bool
	p.withoutWaiting(t, fmt.Sprintf("a direct write of a %d-byte frame", len(payload)), func() error {
		var complete bool
		var err error
		handled, complete, err = p.fw.writeDataFrame(opcode, payload)
		if spilled := spilledBytes(p.fw) > 0; err == nil && handled && complete == spilled {
			return fmt.Errorf("writeDataFrame reported complete %v with %d bytes spilled", complete, spilledBytes(p.fw))
		}
		return err
	})
	if handled {
		p.want = append(p.want, append(frameHeader(opcode, len(payload), false), payload...)...)
	}
	return handled
}

// A whole frame written past coder/websocket has the header RFC 6455 gives
// its length at every size class (7-bit, 16-bit, 64-bit), mixes with
// frames written through the bufio.Writer in order, and still spills
// without waiting once the client stops reading; flush delivers all.
func TestWriteDataFrameAtEverySizeAndAfterASpill(t *testing.T) {
	p := newTryPair(t)
	for i, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		if !p.writeData(t, 0x1, tryPayload(i, n)) {
			t.Fatalf("writeDataFrame did not take a %d-byte frame at a frame boundary", n)
		}
		p.tryFrame(t, 0x2, tryPayload(i+100, 300)) // through bufio: held, then whole
	}
	if !p.fw.spilled() {
		t.Fatal("no spill after ~270 KiB to a client that does not read")
	}
	if !p.writeData(t, 0x2, tryPayload(7, 10)) {
		t.Fatal("writeDataFrame did not take a frame behind a spill")
	}
	p.flushToReader(t)
}

// While part of one of coder/websocket's frames is held, writeDataFrame
// leaves the write to coder/websocket (a frame of its own there would cut
// that frame in two); once the frame is complete it writes again. After a
// Close frame it refuses, as coder/websocket does.
func TestWriteDataFrameOnlyAtAFrameBoundaryAndNotAfterClose(t *testing.T) {
	p := newTryPair(t)
	frame := append(frameHeader(0x2, 1000, false), tryPayload(1, 1000)...)
	p.withoutWaiting(t, "writing a frame's first part", func() error {
		_, err := p.fw.Write(frame[:100])
		return err
	})
	if p.writeData(t, 0x1, []byte("x")) {
		t.Fatal("writeDataFrame wrote while part of a frame was held")
	}
	p.withoutWaiting(t, "writing the frame's rest", func() error {
		_, err := p.fw.Write(frame[100:])
		return err
	})
	p.want = append(p.want, frame...)
	if !p.writeData(t, 0x1, []byte("after")) {
		t.Fatal("writeDataFrame did not write at the boundary after the held frame")
	}
	p.tryFrame(t, opClose, []byte{0x03, 0xe8})
	p.withoutWaiting(t, "a direct write after Close", func() error {
		handled, _, err := p.fw.writeDataFrame(0x1, []byte("late"))
		if !handled || !errors.Is(err, errClosing) {
			return fmt.Errorf("writeDataFrame after a Close frame: handled %v, %v; want errClosing", handled, err)
		}
		return nil
	})
	p.flushToReader(t)
}
