package transport

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/hubfabric/hubfabric/auth"
)

// sseWriter is a Server-Sent Events stream as the connection code's
// Socket: each frame is one event, a "data: " line per line of the frame.
// The stream's HTTP handler stays in serveEventStream until the
// connection has ended, so the ResponseWriter outlives every write.
type sseWriter struct {
	h  *httpConn
	w  http.ResponseWriter
	rc *http.ResponseController

	mu  sync.Mutex // one write at a time (the writer, or the handshake refusal)
	buf []byte
}

// WriteFrame writes frame as one event and flushes it.
func (s *sseWriter) WriteFrame(ctx context.Context, frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.h.closed:
		return errSocketClosed
	default:
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.rc.SetWriteDeadline(dl)
		defer func() { _ = s.rc.SetWriteDeadline(time.Time{}) }()
	}
	s.buf = appendEvent(s.buf[:0], frame)
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	return s.rc.Flush()
}

// appendEvent appends frame as one SSE event: "data: <line>\r\n" per line,
// then an empty line. The client joins the lines with "\n" again.
func appendEvent(dst, frame []byte) []byte {
	for {
		line, rest, more := bytes.Cut(frame, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		dst = append(dst, "data: "...)
		dst = append(dst, line...)
		dst = append(dst, '\r', '\n')
		if !more {
			break
		}
		frame = rest
	}
	return append(dst, '\r', '\n')
}

// Close ends the stream after what was written.
func (s *sseWriter) Close() error { s.h.closeSocket(); return nil }

// CloseNow ends the stream at once, cutting off a write in progress.
func (s *sseWriter) CloseNow() error {
	_ = s.rc.SetWriteDeadline(time.Now())
	s.h.closeSocket()
	return nil
}

// serveEventStream opens a connection's SSE stream and holds the request
// until the connection ends.
func (s *Server) serveEventStream(w http.ResponseWriter, r *http.Request, hub, token string, identity auth.Identity) {
	if h, _, _ := s.lookup(token, identity); h != nil {
		http.Error(w, "a connection with that ID is already active", http.StatusConflict)
		return
	}
	// The writer is the connection's socket as soon as the connection can
	// be found (a handshake POST may come before the stream has started);
	// it stays locked until the stream's headers and first bytes are out.
	sw := &sseWriter{w: w, rc: http.NewResponseController(w)}
	sw.mu.Lock()
	h, status, msg := s.newHTTPConn(r.Context(), r, hub, token, transportServerSentEvents, identity, sw)
	if status != 0 {
		sw.mu.Unlock()
		http.Error(w, msg, status)
		return
	}
	// The stream outlives the server's read timeout and has no write
	// timeout of its own; the connection's liveness bounds it.
	_ = h.sse.rc.SetReadDeadline(time.Time{})
	_ = h.sse.rc.SetWriteDeadline(time.Time{})
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(":\r\n"))
	err := h.sse.rc.Flush()
	h.sse.mu.Unlock()
	if err != nil {
		h.closeSocket()
		h.end(err)
	}
	select {
	case <-r.Context().Done():
		h.end(nil) // the client went away: the connection is over
	case <-h.ended:
	case <-h.closed:
	}
	// The writer may still be writing its last frame: wait until the
	// connection is torn down before the handler returns, and for any
	// write in progress (a handshake refusal); later writes see closed.
	h.end(nil)
	<-h.finished
	h.sse.mu.Lock()
	//nolint:staticcheck // an empty critical section: waits for a write in progress
	h.sse.mu.Unlock()
}
