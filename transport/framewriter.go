package transport

import (
	"net"
	"sync"
)

// writeBufferSize is the size of the bufio.Writer coder/websocket frames
// into. It is held for the connection's whole life, so it is memory per
// idle connection (net/http's is 4 KiB). A frame that fits (header plus a
// payload of up to ~240 bytes) is one write; a longer one is flushed in
// two pieces that frameWriter joins into one writev.
const writeBufferSize = 256

// frameWriter is the io.Writer under coder/websocket's bufio.Writer. It
// follows the server's outgoing WebSocket frames (unmasked; header then
// payload) and sends each frame in one system call: bytes that bufio
// flushes because its buffer filled mid-frame are held, and go out with
// the rest of the frame as one writev. It only ever holds bytes of the
// frame being written, so nothing waits once a frame is complete. Writes
// are serialized by coder/websocket (one frame writer at a time).
type frameWriter struct {
	conn net.Conn
	held *[]byte // an incomplete frame's first bytes, from heldBuffers

	// Frame tracking: in the header, hdr collects its bytes; in the
	// payload, payloadLeft counts what is still to come.
	inPayload   bool
	hdr         [14]byte
	hdrN        int
	payloadLeft uint64
}

var heldBuffers = sync.Pool{New: func() any { b := make([]byte, 0, writeBufferSize); return &b }}

// Write passes p on at once when p ends a frame, and holds it otherwise.
func (w *frameWriter) Write(p []byte) (int, error) {
	if w.endsFrame(p) {
		if w.held == nil {
			return w.conn.Write(p)
		}
		bufs := net.Buffers{*w.held, p}
		held := len(*w.held)
		n, err := bufs.WriteTo(w.conn)
		w.release()
		return max(int(n)-held, 0), err
	}
	if w.held == nil {
		w.held = heldBuffers.Get().(*[]byte)
	}
	*w.held = append(*w.held, p...)
	return len(p), nil
}

func (w *frameWriter) release() {
	if cap(*w.held) <= 4*writeBufferSize {
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
