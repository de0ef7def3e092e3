package hub_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// flood sends n large messages to the caller.
type floodHub struct{}

func (floodHub) Flood(c *hub.Context, n, size int) error {
	payload := strings.Repeat("x", size)
	for i := 0; i < n; i++ {
		if err := c.Clients.Caller().Send(c, "flood", payload); err != nil {
			return err
		}
	}
	return nil
}

func (floodHub) Echo(_ *hub.Context, s string) (string, error) { return s, nil }

func TestSlowClientIsClosedAndOthersAreNot(t *testing.T) {
	tn := startNode(t, hub.Config{MaxOutboundBytes: 64 << 10}, map[string]any{"chat": floodHub{}})
	w := witness(t, tn)
	slow, _, err := dialRaw(t, tn.url, "chat", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	slow.handshake(protocol.JSON)
	// The slow client asks for 64 MiB and then does not read until the
	// server gives up on it.
	slow.send(&protocol.Invocation{Target: "flood", Arguments: []any{4096, 16 << 10}})
	echoRoundTrip(t, w, "during-flood")
	cl := slow.expectClose()
	if !strings.Contains(cl.Error, "too slow") || !cl.AllowReconnect {
		t.Fatalf("slow client Close = %+v, want a reconnectable 'too slow' error", cl)
	}
	echoRoundTrip(t, w, "after-flood")
}

func TestKeepAliveAndClientTimeout(t *testing.T) {
	tn := startNode(t, hub.Config{KeepAliveInterval: 50 * time.Millisecond, ClientTimeout: 300 * time.Millisecond}, map[string]any{"chat": echoHub{}})
	c, _, err := dialRaw(t, tn.url, "chat", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.MessagePack)
	if m := c.nextAny(); m.MessageType() != protocol.TypePing {
		t.Fatalf("idle connection got %#v, want a Ping", m)
	}
	c.send(&protocol.Ping{}) // starts the client timeout; then silence
	cl := c.expectClose()
	if !strings.Contains(cl.Error, "sent nothing") || !cl.AllowReconnect {
		t.Fatalf("timeout Close = %+v", cl)
	}
}

// gate blocks Wait until the test releases it, to observe parallelism.
type gateHub struct{ started, release chan struct{} }

func (g gateHub) Wait(c *hub.Context) error {
	g.started <- struct{}{}
	select {
	case <-g.release:
	case <-c.Done():
	}
	return nil
}

func TestParallelInvocationLimit(t *testing.T) {
	for _, limit := range []int{1, 3} {
		g := gateHub{started: make(chan struct{}, 10), release: make(chan struct{})}
		tn := startNode(t, hub.Config{MaxParallelInvocations: limit}, map[string]any{"chat": g})
		c, _, err := dialRaw(t, tn.url, "chat", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.handshake(protocol.JSON)
		for i := 0; i < 5; i++ {
			c.send(&protocol.Invocation{InvocationID: string(rune('a' + i)), Target: "wait"})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for i := 0; i < limit; i++ {
			select {
			case <-g.started:
			case <-ctx.Done():
				t.Fatalf("limit %d: only %d calls started", limit, i)
			}
		}
		// One more must not start until one finishes: release one and see
		// exactly one more start.
		select {
		case <-g.started:
			t.Fatalf("limit %d: more than %d calls ran at once", limit, limit)
		default:
		}
		g.release <- struct{}{}
		select {
		case <-g.started:
		case <-ctx.Done():
			t.Fatalf("limit %d: next call did not start after one finished", limit)
		}
		close(g.release)
		for i := 0; i < 5; i++ {
			if m, ok := c.next().(*protocol.Completion); !ok || m.Error != "" {
				t.Fatalf("limit %d: got %#v", limit, m)
			}
		}
		cancel()
	}
}
