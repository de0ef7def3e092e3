package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
)

// BenchmarkClientResult measures one InvokeClient round trip (node -> Go client handler ->
// node) to a connection on the asking node and on another node of an in-memory bus:
//
//	go test ./hub -run '^$' -bench ClientResult
func BenchmarkClientResult(b *testing.B) {
	bench := func(b *testing.B, node int) {
		nodes := startCluster(b, 2, hub.Config{}, resultHubs)
		c := resultClient(b, nodes[node], "json", make(chan struct{}, 1), nil)
		hc, err := nodes[0].node.HubContext("results")
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b.ResetTimer()
		for i := range b.N {
			if v, err := hub.Invoke[int](ctx, hc.Clients, c.ConnectionID(), "add", i, 1); err != nil || v != i+1 {
				b.Fatalf("add: %d, %v", v, err)
			}
		}
	}
	b.Run("same-node", func(b *testing.B) { bench(b, 0) })
	b.Run("other-node", func(b *testing.B) { bench(b, 1) })
}
