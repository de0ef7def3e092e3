package transport

import (
	"bufio"
	"fmt"
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
	br  *bufio.Reader   // coder/websocket reads the socket through it
	raw syscall.RawConn // the socket under br

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
	w := &readWaiter{br: br, raw: raw}
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
