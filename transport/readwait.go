package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// defaultReadLinger is Server.readLinger: a client whose frames come
// closer together than this is busy, and is waited for in a read rather
// than parked (frameReads.busy).
const defaultReadLinger = time.Second

// readWaiter looks at a WebSocket's socket under coder/websocket, so that
// its reader can tell whether reading the next frame would wait for the
// client (and the connection may park in the idlePoller instead), or wait
// for the client without reading. A goroutine waiting in a read through
// coder/websocket keeps the stack that reading frames grew (4 KiB or
// more), for as long as the client is quiet.
//
// A readWaiter is used by one goroutine at a time (the connection's
// reader).
type readWaiter struct {
	br   *bufio.Reader   // coder/websocket reads the socket through it
	sock net.Conn        // the socket under br; br reads it once br is empty
	raw  syscall.RawConn // the socket under br

	// gate is held while br is looked at outside coder/websocket's read
	// lock (idle) and while coder/websocket's Close reads the client's
	// answer through br itself (wsSocket.Close).
	gate sync.Mutex

	// closedCleanly is set when the connection's Close completed the
	// close handshake (wsConnection.end).
	closedCleanly atomic.Bool

	// sockErr is the error a look at the socket took from it: on Linux,
	// recv with MSG_PEEK returns a pending error (a reset, a timeout) and
	// clears it, so the read after it would see only the end of the
	// stream. The reader returns it instead of reading (socketError).
	sockErr error

	// Made once, so that looking allocates nothing.
	peek     func(fd uintptr) bool
	check    func(fd uintptr)
	readyNow bool
	one      [1]byte
}

// newReadWaiter returns a readWaiter for a socket read through br, or nil
// when conn is not a socket whose descriptor it can reach (then the
// connection is read by one goroutine for its whole life).
func newReadWaiter(conn net.Conn, br *bufio.Reader) *readWaiter {
	sc, ok := conn.(syscall.Conn)
	if !ok || br == nil {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &readWaiter{br: br, sock: conn, raw: raw}
	w.peek = w.peekFD
	w.check = w.checkFD
	return w
}

// idle reports whether nothing the client sent waits in br, so reading
// the next frame would look at the socket. It waits while the connection's
// Close reads the client's answer.
func (w *readWaiter) idle() bool {
	w.gate.Lock()
	defer w.gate.Unlock()
	return w.br.Buffered() == 0
}

// parkedReadBufferSize is the size of the read buffer of a connection
// that is parked or has not read past its handshake yet, bufio's least. A
// reader about to read a frame grows it to readBufferSize (grow), and
// shrinks it again before it parks (shrink); in between it is read through
// only by the handshake and by the node's close of a parked connection
// (wsSocket.Close reads the client's answer).
const parkedReadBufferSize = 16

// shrink replaces br's buffer with a parkedReadBufferSize one when br is
// empty and its buffer bigger, and gives the big one back to
// spareReadBuffers: a parked connection holds no read buffer worth the
// name. Called by the reader before it parks.
func (w *readWaiter) shrink() {
	w.gate.Lock()
	defer w.gate.Unlock()
	if w.br.Buffered() != 0 || w.br.Size() <= parkedReadBufferSize {
		return
	}
	spare := new(bufio.Reader)
	*spare = *w.br
	spare.Reset(nil) // keeps the buffer, lets the socket go
	spareReadBuffers.Put(spare)
	*w.br = *bufio.NewReaderSize(w.sock, parkedReadBufferSize)
}

// grow gives br a readBufferSize buffer (from spareReadBuffers when one is
// there) when it has the small one. Bytes br holds are carried over: they
// are read first, then the socket, so grow may be called between any two
// reads through br, mid-frame too. Called by the reader before it reads a
// frame, and before a connection that never parks (a stateful one) is
// read. A nil w (a socket without a waiter, read through a full-size
// buffer from the start) does nothing.
func (w *readWaiter) grow() {
	// Only the reader (the caller) swaps br's buffer, so its size can be
	// looked at without the gate: the common case, a buffer already
	// grown, costs no lock on every frame.
	if w == nil || w.br.Size() > parkedReadBufferSize {
		return
	}
	w.gate.Lock()
	defer w.gate.Unlock()
	spare, _ := spareReadBuffers.Get().(*bufio.Reader)
	if spare == nil {
		spare = bufio.NewReaderSize(w.sock, readBufferSize)
	}
	if n := w.br.Buffered(); n > 0 {
		held, _ := w.br.Peek(n)
		spare.Reset(io.MultiReader(bytes.NewReader(bytes.Clone(held)), w.sock))
		// The held bytes go into br's buffer now, so an empty br still
		// means the socket is where the next bytes come from (idle).
		// Peeking no more than is held reads nothing from the socket.
		_, _ = spare.Peek(n)
	} else {
		spare.Reset(w.sock)
	}
	*w.br = *spare
	*spare = bufio.Reader{} // br alone holds the buffer now
}

// A swap (shrink, grow) starts br afresh over the socket, so a read error
// br held back would be dropped. None is held at the swaps: the reader
// swaps between frames, after coder/websocket's reads returned without
// error (a socket read returns bytes or an error, never both, so bufio
// keeps an error only when it is the read's answer), and a look at the
// socket that took an error returns it (socketError). Only the node's close
// of a parked connection reads through br outside the reader, and the
// connection ends after it.

// spareReadBuffers holds the readBufferSize readers parked connections
// gave up (shrink), for the next connection whose client speaks (grow).
// Only the buffer is used again: grow copies the Reader into the
// connection's own.
var spareReadBuffers sync.Pool

// readable reports whether the socket has bytes to read, is at its end or
// failed, or is closed here, without waiting.
func (w *readWaiter) readable() bool {
	w.readyNow = true
	if w.raw.Control(w.check) != nil {
		return true // closed: the read will say so
	}
	return w.readyNow
}

// wait returns once the socket is readable (as readable says). It consumes
// nothing: the bytes stay in the socket for br.
func (w *readWaiter) wait() {
	_ = w.raw.Read(w.peek)
}

func (w *readWaiter) checkFD(fd uintptr) { w.readyNow = w.peekFD(fd) }

// socketError returns, once, the error a look at the socket took from it;
// nil for a nil readWaiter.
func (w *readWaiter) socketError() error {
	if w == nil || w.sockErr == nil {
		return nil
	}
	err := w.sockErr
	w.sockErr = nil
	return fmt.Errorf("transport: reading the client's socket: %w", err)
}

// peekFD looks at the socket without taking anything from it; it returns
// false only when there is nothing to read yet.
func (w *readWaiter) peekFD(fd uintptr) bool {
	for {
		switch err := peekSocket(fd, w.one[:]); err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case nil:
			return true // bytes, or the client's FIN (0 bytes): the read will say
		default:
			w.sockErr = err
			return true
		}
	}
}
