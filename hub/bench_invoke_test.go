package hub_test

import (
	"testing"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// BenchmarkInvokeEcho measures one hub method round trip on one WebSocket:
// parse, the connection actor, the method goroutine, binding, the
// Completion's encoding and write, and the client's read.
func BenchmarkInvokeEcho(b *testing.B) {
	tn := startNode(b, benchConfig(hub.Config{}), map[string]any{"chat": echoHub{}})
	c, _, err := dialRaw(b, tn.url, "chat", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	c.handshake(protocol.JSON)
	inv := &protocol.Invocation{InvocationID: "1", Target: "echo", Arguments: []any{"payload"}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.send(inv)
		if m, ok := c.next().(*protocol.Completion); !ok || m.Error != "" {
			b.Fatalf("got %#v", m)
		}
	}
}
