package transport

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// BenchmarkOutbound measures the connection write path: records queued on
// a connection's outbound queue (internal/conn) and written to a real WebSocket (coalesced when the writer is
// behind) until a reader on the other end has them all. ns/op is per
// 100-byte record. buffers=small is the server's setup (smallBuffers and
// frameWriter); buffers=net-http keeps net/http's 4 KiB buffers, as
// websocket.Accept does on its own.
func BenchmarkOutbound(b *testing.B) {
	b.Run("buffers=small", func(b *testing.B) {
		benchmarkOutbound(b, func(w http.ResponseWriter) http.ResponseWriter { return &smallBuffers{ResponseWriter: w} })
	})
	b.Run("buffers=net-http", func(b *testing.B) {
		benchmarkOutbound(b, func(w http.ResponseWriter) http.ResponseWriter { return w })
	})
}

func benchmarkOutbound(b *testing.B, wrap func(http.ResponseWriter) http.ResponseWriter) {
	accepted := make(chan *websocket.Conn, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(wrap(w), r, nil)
		if err != nil {
			return
		}
		accepted <- ws
		<-release
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer client.CloseNow()
	client.SetReadLimit(1 << 20)
	server := <-accepted

	out, err := conn.Open(ctx, wsSocket{ws: server, typ: websocket.MessageText}, conn.Options{
		ID: "bench", Protocol: protocol.JSON, MaxOutboundBytes: 1 << 30,
		KeepAlive: time.Hour, ClientTimeout: time.Hour, Runtime: seam.Real{},
	}, func(context.Context, *conn.Conn) (conn.Session, error) { return noSession{}, nil })
	if err != nil {
		b.Fatal(err)
	}
	// The handshake answer goes first; skip it.
	if _, _, err := client.Read(ctx); err != nil {
		b.Fatal(err)
	}
	record := append(bytes.Repeat([]byte("x"), 99), 0x1e)
	got := make(chan struct{})
	go func() {
		n := 0
		for n < b.N {
			_, data, err := client.Read(ctx)
			if err != nil {
				b.Error(err)
				break
			}
			n += bytes.Count(data, []byte{0x1e})
		}
		close(got)
	}()
	b.SetBytes(int64(len(record)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := out.Enqueue(record); err != nil {
			b.Fatal(err)
		}
	}
	<-got
	b.StopTimer()
	out.End(nil)
	out.Wait()
}

type noSession struct{}

func (noSession) Closed(error) {}
