package transport

import (
	"bufio"
	"net"
	"syscall"
)

// readWaiter lets a connection's reading goroutine wait for the client
// with a shallow stack. A goroutine's stack keeps the size it grew to (the
// runtime shrinks it only while it uses under a quarter of it, which a
// goroutine parked in a socket read does not), and reading a frame through
// coder/websocket is deep enough to grow it past the 2 KiB it starts with.
// So the reading goroutine only waits, here, for the client's next bytes,
// and the frames are read on a goroutine started for them that ends once
// nothing is left to read (readLoop): an idle connection keeps a 2 KiB
// stack instead of 4 KiB or more.
//
// A readWaiter is used by one goroutine at a time (the connection's
// reader).
type readWaiter struct {
	br   *bufio.Reader   // coder/websocket reads the socket through it
	raw  syscall.RawConn // the socket under br
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
	w := &readWaiter{br: br, raw: raw}
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
