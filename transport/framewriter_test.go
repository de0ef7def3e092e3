package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"pgregory.net/rapid"
)

// recordingConn is a net.Conn that keeps what is written to it.
type recordingConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) { return c.out.Write(p) }

// frameHeader encodes a WebSocket frame header the way RFC 6455 lays it
// out (FIN, opcode, optional mask bit and key).
func frameHeader(opcode byte, n int, masked bool) []byte {
	h := []byte{0x80 | opcode, 0}
	switch {
	case n < 126:
		h[1] = byte(n)
	case n <= 0xffff:
		h[1] = 126
		h = binary.BigEndian.AppendUint16(h, uint16(n))
	default:
		h[1] = 127
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	if masked {
		h[1] |= 0x80
		h = append(h, 1, 2, 3, 4)
	}
	return h
}

// Frames written the way coder/websocket writes them (header, payload,
// flush, through a bufio.Writer of writeBufferSize) reach the socket byte
// for byte, and each frame is complete on the socket once flushed: the
// writer never sits on bytes of a finished frame.
func TestFrameWriterPassesWholeFrames(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rc := &recordingConn{}
		fw := &frameWriter{conn: rc}
		bw := bufio.NewWriterSize(fw, writeBufferSize)
		var want []byte
		frames := rapid.IntRange(1, 20).Draw(t, "frames")
		for i := range frames {
			n := rapid.OneOf(
				rapid.IntRange(0, 300),
				rapid.SampledFrom([]int{125, 126, 127, writeBufferSize - 4, writeBufferSize - 2, writeBufferSize, 0xffff, 0x10000}),
				rapid.IntRange(300, 70000),
			).Draw(t, "size")
			hdr := frameHeader(byte(1+i%2), n, rapid.Bool().Draw(t, "masked"))
			payload := bytes.Repeat([]byte{byte('a' + i%26)}, n)
			before := len(want)
			if _, err := bw.Write(hdr); err != nil {
				t.Fatal(err)
			}
			if _, err := bw.Write(payload); err != nil {
				t.Fatal(err)
			}
			// Nothing of a frame reaches the socket before all of it can:
			// bufio's mid-frame flushes are held back and joined.
			if got := rc.out.Len(); got != before && got != before+len(hdr)+n {
				t.Fatalf("frame %d (%d-byte payload): socket got %d of its %d bytes before the frame was complete", i, n, got-before, len(hdr)+n)
			}
			if err := bw.Flush(); err != nil {
				t.Fatal(err)
			}
			want = append(append(want, hdr...), payload...)
			if !bytes.Equal(rc.out.Bytes(), want) {
				t.Fatalf("after frame %d (%d-byte payload): socket has %d bytes, want %d", i, n, rc.out.Len(), len(want))
			}
			if fw.held != nil {
				t.Fatalf("after frame %d: %d bytes still held", i, len(*fw.held))
			}
		}
	})
}

// Messages of every size class go through coder/websocket, the small
// buffers and frameWriter to a real client intact and in order, and one
// back through the read buffer: readBufferSize for a connection that does
// not park, the parked one's 16 bytes (never grown here) for one that may.
func TestSmallBuffersCarryMessagesOfAnySize(t *testing.T) {
	for _, mayPark := range []bool{false, true} {
		t.Run(fmt.Sprintf("mayPark=%v", mayPark), func(t *testing.T) { testSmallBuffers(t, mayPark, false) })
	}
	// Over TLS the socket is out of reach: no waiter (nothing parks), and
	// every frame goes through coder/websocket's writer.
	t.Run("tls", func(t *testing.T) { testSmallBuffers(t, true, true) })
}

func testSmallBuffers(t *testing.T, mayPark, overTLS bool) {
	want := readBufferSize
	if mayPark {
		want = parkedReadBufferSize
	}
	sizes := []int{0, 1, 125, 126, 240, 255, 256, 300, 4095, 4096, 4097, 65535, 65536, 200000}
	done := make(chan error, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sb := &smallBuffers{ResponseWriter: w, mayPark: mayPark}
		ws, err := websocket.Accept(sb, r, nil)
		if err != nil {
			done <- err
			return
		}
		switch {
		case overTLS && (sb.waiter != nil || sb.fw.raw != nil):
			done <- errors.New("over TLS the socket was reached")
			return
		case !overTLS && (sb.waiter == nil || sb.waiter.br.Size() != want):
			done <- fmt.Errorf("read buffer after the upgrade: waiter %v, want %d bytes", sb.waiter, want)
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(1 << 20)
		ctx := context.Background()
		for _, n := range sizes {
			if err := ws.Write(ctx, websocket.MessageText, []byte(strings.Repeat("x", n))); err != nil {
				done <- err
				return
			}
		}
		// Echo one message back, so reads through the small read buffer are
		// covered too, then close normally.
		_, msg, err := ws.Read(ctx)
		if err == nil {
			err = ws.Write(ctx, websocket.MessageBinary, msg)
		}
		if err == nil {
			err = ws.Close(websocket.StatusNormalClosure, "")
		}
		done <- err
	})
	srv := httptest.NewUnstartedServer(handler)
	if overTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.URL, &websocket.DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for _, n := range sizes {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("reading the %d-byte message: %v", n, err)
		}
		if len(msg) != n || strings.Trim(string(msg), "x") != "" {
			t.Fatalf("got %d bytes, want %d x's", len(msg), n)
		}
	}
	echo := bytes.Repeat([]byte("echo"), 5000)
	if err := c.Write(ctx, websocket.MessageBinary, echo); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || !bytes.Equal(msg, echo) {
		t.Fatalf("echo: %d bytes, %v", len(msg), err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("want a normal close, got %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}
