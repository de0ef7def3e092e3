package actors

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/internal/fabric"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// BenchmarkHandleMessage measures what the backplane handler costs per
// envelope another node published: decoding, checking and handing it to
// the hub actor (here an actor that drops it, so the router's fan-out is
// not counted). "small" is a chat-sized send, "1KiB" one with a 1 KiB
// string argument; "own" is the node's own send come back, which it drops.
func BenchmarkHandleMessage(b *testing.B) {
	for _, bc := range []struct {
		name, origin string
		args         []any
	}{
		{"small", "n2", []any{"alice", "hello, world"}},
		{"1KiB", "n2", []any{"alice", strings.Repeat("x", 1024)}},
		{"own", "n1", []any{"alice", "hello, world"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			sys := newTestSystem(b)
			sink, err := sys.Root.SpawnNamed(actor.PropsFromFunc(func(actor.Context) {}), "bench-sink")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = sys.Root.StopFuture(sink).Wait() })
			h := &backplaneHandler{
				root: sys.Root, hubs: map[string]*actor.PID{"chat": sink}, nodeID: "n1",
				counters: &fabric.Counters{}, log: slog.New(slog.DiscardHandler),
			}
			data := marshalEnvelope(b, &fabricv1.Envelope{OriginNode: bc.origin, Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{
				Json:        record(b, protocol.JSON, "message", bc.args...),
				Messagepack: record(b, protocol.MessagePack, "message", bc.args...),
			}}})
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				h.HandleMessage("h:chat:g:room-1", data)
			}
			b.StopTimer()
			if m := h.counters.Malformed.Load(); m != 0 {
				b.Fatalf("Malformed = %d: the benchmark's envelope was dropped", m)
			}
		})
	}
}
