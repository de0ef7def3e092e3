package hub_test

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// BenchmarkHandOver moves one stateful connection (a user, one group) back and forth
// between two nodes, once per iteration: its socket drops, and the client reconnects to the
// other node and resends a call. One hand-over is timed from the new socket's dial to the
// call's completion, which the new node holds back until the move is done: the time a
// client waits before the new node serves it. Run 100 hand-overs:
//
//	go test ./hub -run '^$' -bench HandOver -benchtime 100x
//
// It reports the median and the 99th percentile (ms) besides ns/op.
func BenchmarkHandOver(b *testing.B) {
	for _, bp := range handOverBackplanes()[:2] { // memory, redis
		b.Run(bp.name, func(b *testing.B) { benchHandOver(b, bp.new(b)) })
	}
}

func benchHandOver(b *testing.B, newBackplane func() backplane.Backplane) {
	p := protocol.MessagePack
	h := &moverHub{statefulHub: statefulHub{gone: make(chan error, 1)}}
	nodes := startClusterOn(b, 2, hub.Config{StatefulReconnect: true, StatefulReconnectWindow: 10 * time.Second, GroupAckTimeout: 2 * time.Second, Authenticator: alice},
		func() map[string]any { return map[string]any{"s": h} }, newBackplane)
	c, token, _ := dialStateful(b, nodes[0], p)
	r := &statefulReader{c: c, next: 1}
	c.send(&protocol.Invocation{InvocationID: "join", Target: "Join", Arguments: []any{"g"}})
	if m, ok := r.read().(*protocol.Completion); !ok || m.Error != "" {
		b.Fatalf("join: %+v", m)
	}
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		c.ws.CloseNow()
		start := time.Now()
		c = reattach(b, nodes[(i+1)%2], p, token)
		r.c = c
		c.send(&protocol.Sequence{SequenceID: int64(2 + i)}) // Join and i Records went before; none to resend
		id := strconv.Itoa(i)
		c.send(&protocol.Invocation{InvocationID: id, Target: "Record", Arguments: []any{i}})
		got := r.read()
		if m, ok := got.(*protocol.Completion); !ok || m.Error != "" || m.InvocationID != id {
			b.Fatalf("hand-over %d: the call after the reconnect: %T %+v", i, got, got)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	if n := h.disconnected.Load(); n != 0 {
		b.Fatalf("OnDisconnected ran %d times during %d hand-overs", n, len(took))
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[(len(took)*99)/100]), "p99-ms")
}
