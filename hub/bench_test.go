package hub_test

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// BenchmarkFanOut measures one group message reaching 1,000 local
// connections through the group actor, the connection actors, their
// outbound queues and real WebSockets to in-process readers. ns/op is per
// message (1,000 deliveries); deliveries/s is reported.
func BenchmarkFanOut(b *testing.B) {
	for _, proto := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
		b.Run(proto.Name(), func(b *testing.B) { benchFanOut(b, proto, 1000) })
	}
}

func benchFanOut(b *testing.B, proto protocol.HubProtocol, members int) {
	tn := startNode(b, benchConfig(hub.Config{MaxOutboundBytes: 64 << 20}), map[string]any{"room": &roomHub{}})
	hc, err := tn.node.HubContext("room")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got atomic.Int64
	var want atomic.Int64
	done := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := 0; i < members; i++ {
		c, _, err := dialRaw(b, tn.url, "room", "", nil)
		if err != nil {
			b.Fatal(err)
		}
		c.handshake(proto)
		id := callWhoami(b, c)
		if err := hc.Groups.Add(ctx, id, "bench"); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func(ws *websocket.Conn) {
			defer wg.Done()
			for {
				_, data, err := ws.Read(ctx)
				if err != nil {
					return
				}
				n := countRecords(proto, data)
				if got.Add(int64(n)) == want.Load() {
					select {
					case done <- struct{}{}:
					default:
					}
				}
			}
		}(c.ws)
	}
	payload := bytes.Repeat([]byte("x"), 64)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	want.Store(int64(b.N * members))
	for i := 0; i < b.N; i++ {
		if err := hc.Clients.Group("bench").Send(ctx, "m", i, string(payload)); err != nil {
			b.Fatal(err)
		}
	}
	if got.Load() < want.Load() {
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			b.Fatalf("only %d of %d deliveries", got.Load(), want.Load())
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*members)/elapsed.Seconds(), "deliveries/s")
	cancel()
}

func countRecords(p protocol.HubProtocol, frame []byte) int {
	if p.TransferFormat() == protocol.TransferText {
		return bytes.Count(frame, []byte{protocol.RecordSeparator})
	}
	n := 0
	for len(frame) > 0 {
		size, k := 0, 0
		for shift := 0; ; shift += 7 {
			c := frame[k]
			k++
			size |= int(c&0x7f) << shift
			if c < 0x80 {
				break
			}
		}
		frame = frame[k+size:]
		n++
	}
	return n
}

// BenchmarkSend measures the sending side alone: serialize once per
// protocol, route through the hub actor, hand to the backplane bridge, with
// no recipients.
func BenchmarkSend(b *testing.B) {
	tn := startNode(b, benchConfig(hub.Config{}), map[string]any{"room": &roomHub{}})
	hc, err := tn.node.HubContext("room")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := hc.Clients.Group("nobody").Send(ctx, "m", i, "payload"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSendGroupLocal measures SendToGroup when every member is on this
// node (10 WebSocket members, in-memory backplane with no other node): the
// routing cost of a send whose recipients are all local. ns/op is per
// message (10 deliveries).
func BenchmarkSendGroupLocal(b *testing.B) { benchFanOut(b, protocol.JSON, 10) }
