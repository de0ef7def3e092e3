package transport

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// writeBufferSize is the size of the bufio.Writer coder/websocket frames
// into, bufio's least. It is held for the connection's whole life, so it
// is memory per idle connection (net/http's is 4 KiB), and it carries
// only the frames that do not go through writeDataFrame: those written
// while the client is behind (wsSocket.WriteFrame), control frames and the
// handshake answer. Their pieces, flushed as the buffer fills, are held by
// the frameWriter (heldBufferSize buffers, pooled) and go out as one
// writev per frame. Over a connection whose socket the frameWriter cannot
// reach (TLS), where pieces are separate writes, the buffer is
// heldBufferSize instead (smallBuffers.Hijack).
const writeBufferSize = 16

// heldBufferSize is the capacity of the pooled buffers that hold a frame's
// first pieces until its last one arrives (frameWriter.held).
const heldBufferSize = 256

// maxSpilledControl bounds the spilled bytes behind which a control frame
// (a Pong answering the client's Ping, a Close) may still be kept: a client
// that sends Pings but does not read is closed instead of growing the
// spill.
const maxSpilledControl = 4 << 10

// errSpillFull fails a control frame written while more than
// maxSpilledControl bytes wait for a client that does not read.
var errSpillFull = errors.New("transport: the client does not read: its socket is full and a control frame would wait behind more than 4 KiB")

// frameWriter is the io.Writer under coder/websocket's bufio.Writer. It
// follows the server's outgoing WebSocket frames (unmasked; header then
// payload) and sends each frame in one system call: bytes that bufio
// flushes because its buffer filled mid-frame are held, and go out with
// the rest of the frame as one writev. It only ever holds bytes of the
// frame being written, so nothing waits once a frame is complete.
//
// Once try is set (over a TCP socket: raw set) a write does not wait for
// the client unless blocking is set: what the socket does not take at once is spilled, and
// goes out first with the next blocking write or flush. The connection's
// writer sets blocking while it may wait (wsSocket.WriteFrame, Close);
// everything else (a write inline in the fan-out, a Pong from the reading
// goroutine) never waits for the client. Writes are serialized by
// coder/websocket (one frame writer at a time) and, with flush, by mu.
type frameWriter struct {
	conn     net.Conn
	raw      syscall.RawConn // nil: every write waits for the socket
	try      atomic.Bool     // set once by its wsSocket: writes need not wait (over raw)
	blocking atomic.Bool     // while try is set: this write may wait for the client

	mu    sync.Mutex
	held  *[]byte // an incomplete frame's first bytes, from heldBuffers
	spill []byte  // complete frames' bytes the socket has not taken yet
	op    byte    // opcode of the frame being tracked

	// Frame tracking: in the header, hdr collects its bytes; in the
	// payload, payloadLeft counts what is still to come.
	inPayload   bool
	hdr         [14]byte
	hdrN        int
	payloadLeft uint64

	closing bool // a Close frame has been started: no data frame may follow

	// One raw write's argument and results, under mu: rawWrite is made
	// once, so a write allocates no closure.
	rawBuf   []byte
	rawN     int
	rawErr   error
	rawWrite func(fd uintptr) bool
}

var heldBuffers = sync.Pool{New: func() any { b := make([]byte, 0, heldBufferSize); return &b }}

// newFrameWriter returns a frameWriter over conn; it can write without
// waiting when conn is a socket whose descriptor it can reach.
func newFrameWriter(conn net.Conn) *frameWriter {
	w := &frameWriter{conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
			w.rawWrite = w.writeFD
		}
	}
	return w
}

// Write passes p on at once when p ends a frame, and holds it otherwise.
// Without blocking set (and over a TCP socket) it writes only what the
// socket takes at once and spills the rest.
func (w *frameWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.endsFrame(p) {
		if w.held == nil {
			w.held = heldBuffers.Get().(*[]byte)
		}
		*w.held = append(*w.held, p...)
		return len(p), nil
	}
	if w.raw != nil && w.try.Load() && !w.blocking.Load() {
		return w.writeNow(p)
	}
	if len(w.spill) > 0 {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	return w.writeFrame(p)
}

// writeFrame writes the held bytes and p, the rest of a frame, waiting
// for the socket.
func (w *frameWriter) writeFrame(p []byte) (int, error) {
	if w.held == nil {
		return w.conn.Write(p)
	}
	bufs := net.Buffers{*w.held, p}
	held := len(*w.held)
	n, err := bufs.WriteTo(w.conn)
	w.release()
	return max(int(n)-held, 0), err
}

// writeNow writes the held bytes and p (the rest of a frame) as far as the
// socket takes them without waiting, and spills what it does not take.
func (w *frameWriter) writeNow(p []byte) (int, error) {
	if len(w.spill) > 0 {
		if isControl(w.op) && len(w.spill) > maxSpilledControl {
			return 0, errSpillFull
		}
		if w.held != nil {
			w.spill = append(w.spill, *w.held...)
			w.release()
		}
		w.spill = append(w.spill, p...)
		n, err := w.tryWrite(w.spill)
		if err != nil {
			return 0, err
		}
		w.spill = w.spill[:copy(w.spill, w.spill[n:])]
		return len(p), nil
	}
	if w.held != nil {
		held := *w.held
		n, err := w.tryWrite(held)
		if err != nil {
			w.release()
			return 0, err
		}
		if n < len(held) {
			w.spill = append(append(w.spill, held[n:]...), p...)
			w.release()
			return len(p), nil
		}
		w.release()
	}
	n, err := w.tryWrite(p)
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		w.spill = append(w.spill, p[n:]...)
	}
	return len(p), nil
}

// tryWrite makes one write system call that does not wait: it returns how
// much of b the socket took (0 when its buffer is full). w.mu is held.
func (w *frameWriter) tryWrite(b []byte) (int, error) {
	w.rawBuf = b
	err := w.raw.Write(w.rawWrite)
	n, werr := w.rawN, w.rawErr
	w.rawBuf, w.rawN, w.rawErr = nil, 0, nil
	switch {
	case err != nil:
		return 0, err
	case werr == syscall.EAGAIN:
		return 0, nil
	case werr != nil:
		return 0, werr
	}
	return max(n, 0), nil
}

// writeFD is tryWrite's raw write: one write of rawBuf to fd, repeated
// only when interrupted, never waiting for writability.
func (w *frameWriter) writeFD(fd uintptr) bool {
	for {
		w.rawN, w.rawErr = syscall.Write(int(fd), w.rawBuf)
		if w.rawErr != syscall.EINTR {
			return true
		}
	}
}

// spilled reports whether bytes wait for a flush.
func (w *frameWriter) spilled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.spill) > 0
}

// flush writes the spilled bytes, waiting for the client to take them.
func (w *frameWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

func (w *frameWriter) flushLocked() error {
	if len(w.spill) == 0 {
		return nil
	}
	_, err := w.conn.Write(w.spill)
	w.spill = nil // spills are rare: an idle connection keeps no buffer
	return err
}

// opClose is the WebSocket opcode of a Close frame.
const opClose = 0x8

// errClosing refuses a data frame after the Close frame.
var errClosing = errors.New("transport: the WebSocket is closing: a Close frame was sent")

// scratchBuffers hold bytes built for one write and then given back: a
// whole frame writeDataFrame builds, a negotiate answer (a ResponseWriter,
// as any io.Writer, keeps nothing of what Write is given). Each user puts
// back only buffers under its own bound.
var scratchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeDataFrame writes payload as one whole, unmasked, final frame of
// opcode op (text or binary) without waiting for the client, like Write in
// try mode: what the socket does not take is spilled. It passes coder/
// websocket by, saving its locks and buffer copies, so it acts only at a
// frame boundary: handled is false (and nothing is written) when try is not
// set, a blocking write is under way, or part of one of coder/websocket's
// frames is held; the caller then writes through coder/websocket. After a
// Close frame it refuses with errClosing, as coder/websocket would.
// complete is false when bytes were spilled (this frame's or earlier ones).
func (w *frameWriter) writeDataFrame(op byte, payload []byte) (handled, complete bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.raw == nil || !w.try.Load() || w.blocking.Load() || w.held != nil || w.inPayload || w.hdrN != 0 {
		return false, false, nil
	}
	if w.closing {
		return true, len(w.spill) == 0, errClosing
	}
	bp := scratchBuffers.Get().(*[]byte)
	frame := appendFrameHeader((*bp)[:0], op, len(payload))
	frame = append(frame, payload...)
	w.op = op
	_, err = w.writeNow(frame)
	if cap(frame) <= 64<<10 {
		*bp = frame[:0]
		scratchBuffers.Put(bp)
	}
	return true, len(w.spill) == 0, err
}

// appendFrameHeader appends the header of a final, unmasked frame of
// opcode op carrying n payload bytes (RFC 6455 section 5.2).
func appendFrameHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n <= 125:
		return append(dst, byte(n))
	case n <= 0xffff:
		return append(dst, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
	}
}

// isControl reports whether a WebSocket opcode is a control frame's.
func isControl(op byte) bool { return op&0x8 != 0 }

func (w *frameWriter) release() {
	if cap(*w.held) <= 4*heldBufferSize {
		*w.held = (*w.held)[:0]
		heldBuffers.Put(w.held)
	}
	w.held = nil
}

// endsFrame advances the frame tracking over p and reports whether p ends
// exactly at a frame boundary.
func (w *frameWriter) endsFrame(p []byte) bool {
	for len(p) > 0 {
		if w.inPayload {
			n := uint64(len(p))
			if n > w.payloadLeft {
				n = w.payloadLeft
			}
			w.payloadLeft -= n
			p = p[n:]
			if w.payloadLeft == 0 {
				w.inPayload = false
			}
			continue
		}
		if w.hdrN == 0 {
			w.op = p[0] & 0x0f
			if w.op == opClose {
				w.closing = true
			}
		}
		w.hdr[w.hdrN] = p[0]
		w.hdrN++
		p = p[1:]
		if size, ok := w.headerSize(); ok && w.hdrN == size {
			w.payloadLeft = w.payloadLength()
			w.inPayload = w.payloadLeft > 0
			w.hdrN = 0
		}
	}
	return !w.inPayload && w.hdrN == 0
}

// headerSize is the length of the header being collected, known once its
// first two bytes are.
func (w *frameWriter) headerSize() (int, bool) {
	if w.hdrN < 2 {
		return 0, false
	}
	size := 2
	switch w.hdr[1] & 0x7f {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if w.hdr[1]&0x80 != 0 {
		size += 4 // masking key; servers do not mask, but count it if present
	}
	return size, true
}

func (w *frameWriter) payloadLength() uint64 {
	switch n := w.hdr[1] & 0x7f; n {
	case 126:
		return uint64(w.hdr[2])<<8 | uint64(w.hdr[3])
	case 127:
		var l uint64
		for _, b := range w.hdr[2:10] {
			l = l<<8 | uint64(b)
		}
		return l
	default:
		return uint64(n)
	}
}
