package transport

import (
	"bufio"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// readWaiter lets a connection's reading goroutine wait for the client
// with a shallow stack. A goroutine's stack keeps the size it grew to (the
// runtime shrinks it only while it uses under a quarter of it, which a
// goroutine parked in a socket read does not), and reading a frame through
// coder/websocket is deep enough to grow it past the 2 KiB it starts with.
// So the reading goroutine only waits, here, for the client's next bytes,
// and the frames are read on a goroutine started for them that ends once
// the client has been quiet for readLinger (wsConnection.waitLoop): an idle
// connection keeps a 2 KiB stack instead of 4 KiB or more, and a busy one
// is read as if there were no waiter.
//
// A readWaiter is used by one goroutine at a time (the connection's
// reader).
type readWaiter struct {
	br   *bufio.Reader   // coder/websocket reads the socket through it
	conn net.Conn        // the socket under br
	raw  syscall.RawConn // conn's descriptor
	peek func(fd uintptr) bool
	one  [1]byte
}

// newReadWaiter returns a readWaiter for a socket read through br, or nil
// when conn is not a socket whose descriptor it can reach (then frames are
// read on the reading goroutine itself).
func newReadWaiter(conn net.Conn, br *bufio.Reader) *readWaiter {
	sc, ok := conn.(syscall.Conn)
	if !ok || br == nil {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &readWaiter{br: br, conn: conn, raw: raw}
	w.peek = w.peekFD
	return w
}

// idle reports whether nothing the client sent waits in br, so reading
// the next frame would wait for the socket.
func (w *readWaiter) idle() bool { return w.br.Buffered() == 0 }

// wait returns once the socket has bytes to read, is closed by the client
// or failed, or was closed here. It consumes nothing: the bytes stay in
// the socket for br.
func (w *readWaiter) wait() {
	_ = w.raw.Read(w.peek)
}

// readLinger is how long the goroutine reading a connection's frames waits
// for more once it has caught up, before it leaves the waiting to the
// connection's small goroutine: a client sending more often than this is
// read by one goroutine, as if there were no waiter; one quiet for longer
// costs a goroutine start when it speaks again.
const readLinger = time.Second

// waitFor is wait bounded by d: it reports whether the socket became
// readable (or closed, or failed) within d. A socket whose read deadline
// cannot be set counts as readable.
func (w *readWaiter) waitFor(d time.Duration) bool {
	if w.conn.SetReadDeadline(time.Now().Add(d)) != nil {
		return true
	}
	err := w.raw.Read(w.peek)
	// Cleared before anything reads the socket: coder/websocket would take
	// a read deadline's error as the connection's end.
	if w.conn.SetReadDeadline(time.Time{}) != nil {
		return true
	}
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// peekFD looks at the socket without taking anything from it; it returns
// false (wait for the socket to become readable, then call again) only
// when there is nothing yet.
func (w *readWaiter) peekFD(fd uintptr) bool {
	for {
		switch err := peekSocket(fd, w.one[:]); err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		return true // bytes, the client's FIN (0 bytes) or an error: the read will say
	}
}
