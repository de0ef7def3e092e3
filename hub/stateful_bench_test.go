package hub_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// BenchmarkConnectionMemory measures the heap per connection (both socket ends in this
// process: the node's side and a raw WebSocket client), stateless and with stateful reconnect,
// idle and under load (every connection sent -bench.msgs messages of 100 bytes that its client
// has read but not acknowledged, so a stateful connection keeps them for a resend). Run:
//
//	go test ./hub -run '^$' -bench ConnectionMemory -benchtime 1x
//
// It reports B/conn (heap after GC, divided by the connections) for each case.
func BenchmarkConnectionMemory(b *testing.B) {
	const conns = 1000
	const msgs = 50
	for _, tc := range []struct {
		name     string
		stateful bool
		load     bool
	}{
		{"stateless-idle", false, false},
		{"stateful-idle", true, false},
		{"stateless-load", false, true},
		{"stateful-load", true, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				b.ReportMetric(connectionMemory(b, conns, msgs, tc.stateful, tc.load), "B/conn")
			}
		})
	}
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func connectionMemory(b *testing.B, n, msgs int, stateful, load bool) float64 {
	h := &statefulHub{gone: make(chan error, n)}
	tn := startNode(b, hub.Config{StatefulReconnect: stateful, MaxOutboundBytes: 1 << 20}, map[string]any{"s": h})
	hc, err := tn.node.HubContext("s")
	if err != nil {
		b.Fatal(err)
	}
	before := heapAfterGC()
	clients := make([]*rawConn, n)
	for i := range clients {
		query := "negotiateVersion=1"
		version := 1
		if stateful {
			query += "&useStatefulReconnect=true"
			version = 2
		}
		nr := negotiateQuery(b, tn.url, query)
		c, _, err := dialRaw(b, tn.url, "s", "id="+nr.ConnectionToken, nil)
		if err != nil {
			b.Fatal(err)
		}
		c.proto = protocol.JSON
		c.writeText(string(protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: "json", Version: version})))
		if resp := c.handshakeResponse(); resp.Error != "" {
			b.Fatal(resp.Error)
		}
		clients[i] = c
	}
	if load {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		text := strings.Repeat("x", 100)
		for i := range msgs {
			if err := hc.Clients.All().Send(ctx, "got", fmt.Sprint(i), text); err != nil {
				b.Fatal(err)
			}
		}
		for _, c := range clients { // read, never acknowledge
			for range msgs {
				c.next()
			}
			c.buf, c.pending = nil, nil
		}
	}
	after := heapAfterGC()
	runtime.KeepAlive(clients)
	return float64(int64(after)-int64(before)) / float64(n)
}
