package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/actors"
	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// resultHub asks one connection for a client result from a hub method.
type resultHub struct{}

// Ask invokes target(x, y) on connection id and returns its int result.
func (resultHub) Ask(c *hub.Context, id, target string, x, y int) (int, error) {
	ctx, cancel := context.WithTimeout(c, 5*time.Second)
	defer cancel()
	return hub.Invoke[int](ctx, c.Clients, id, target, x, y)
}

// resultClient dials the result hub and registers the client methods the
// tests invoke: add returns x+y, boom throws, silent returns nothing, and
// hold signals entered and blocks until release is closed.
func resultClient(t testing.TB, tn *testNode, proto string, entered chan<- struct{}, release <-chan struct{}) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, tn.url+"results", &client.Options{Protocol: proto})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	c.On("add", func(x, y int) int { return x + y })
	c.On("boom", func(x, y int) (int, error) { return 0, fmt.Errorf("boom %d", x) })
	c.On("silent", func(x, y int) {})
	c.On("hold", func(x, y int) int {
		entered <- struct{}{}
		<-release
		return 0
	})
	return c
}

func resultHubs() map[string]any { return map[string]any{"results": resultHub{}} }

// TestClientResults invokes clients on the node of the caller and on the
// other node, JSON and MessagePack, and checks every outcome: a value, a
// handler error, a missing handler, an unknown connection, a timeout (the
// owner forgets the invocation) and a disconnect while the server waits.
func TestClientResults(t *testing.T) {
	nodes := startCluster(t, 2, hub.Config{GroupAckTimeout: 300 * time.Millisecond}, resultHubs)
	for _, tc := range []struct {
		name  string
		node  int
		proto string
	}{
		{"local-json", 0, "json"},
		{"local-messagepack", 0, "messagepack"},
		{"remote-json", 1, "json"},
		{"remote-messagepack", 1, "messagepack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entered, release := make(chan struct{}, 1), make(chan struct{})
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			t.Cleanup(unblock) // before the clients' Close (cleanups run last first)
			target := resultClient(t, nodes[tc.node], tc.proto, entered, release)
			id := target.ConnectionID()
			hc, err := nodes[0].node.HubContext("results")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			got, err := hub.Invoke[int](ctx, hc.Clients, id, "add", 2, 3)
			if err != nil || got != 5 {
				t.Fatalf("add: %d, %v; want 5", got, err)
			}
			// Many at once: each gets its own answer.
			errs := make(chan error, 20)
			for i := range 20 {
				go func() {
					v, err := hub.Invoke[int](ctx, hc.Clients, id, "add", i, 100)
					if err == nil && v != i+100 {
						err = fmt.Errorf("add(%d, 100) = %d", i, v)
					}
					errs <- err
				}()
			}
			for range 20 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}

			_, err = hub.Invoke[int](ctx, hc.Clients, id, "boom", 7, 0)
			var cre *hub.ClientResultError
			if !errors.As(err, &cre) || cre.Message != "boom 7" {
				t.Fatalf("boom: %v; want the client's error", err)
			}
			var he *hub.Error
			if !errors.As(err, &he) {
				t.Fatalf("boom: %T is not a *hub.Error", err)
			}
			for _, m := range []string{"missing", "silent"} {
				if _, err := hub.Invoke[int](ctx, hc.Clients, id, m, 1, 1); !errors.Is(err, hub.ErrNoClientResult) {
					t.Fatalf("%s: %v; want ErrNoClientResult", m, err)
				}
			}
			// A result that does not fit the type.
			if _, err := hub.Invoke[string](ctx, hc.Clients, id, "add", 1, 1); err == nil {
				t.Fatal("add into a string: no error")
			}

			// Through a hub method, from a client on the other node.
			caller := resultClient(t, nodes[1-tc.node], "json", make(chan struct{}, 1), release)
			if v, err := client.InvokeAs[int](ctx, caller, "Ask", id, "add", 20, 22); err != nil || v != 42 {
				t.Fatalf("Ask add: %d, %v", v, err)
			}
			if _, err := client.InvokeAs[int](ctx, caller, "Ask", id, "boom", 3, 0); err == nil || !strings.Contains(err.Error(), "boom 3") {
				t.Fatalf("Ask boom: %v; want the client's error text", err)
			}

			// No node has the connection.
			if _, err := hub.Invoke[int](ctx, hc.Clients, "no-such-connection", "add", 1, 1); !errors.Is(err, actors.ErrUnknownConnection) {
				t.Fatalf("unknown connection: %v", err)
			}

			// A timeout: the caller gets DeadlineExceeded (on a connection
			// of its own: its client is stuck in hold from then on).
			slowEntered := make(chan struct{}, 1)
			slow := resultClient(t, nodes[tc.node], tc.proto, slowEntered, release)
			short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
			_, err = hub.Invoke[int](short, hc.Clients, slow.ConnectionID(), "hold", 0, 0)
			cancelShort()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("hold: %v; want DeadlineExceeded", err)
			}

			// A disconnect while the server waits: the client is in its
			// handler when it closes.
			done := make(chan error, 1)
			go func() {
				_, err := hub.Invoke[int](ctx, hc.Clients, id, "hold", 0, 0)
				done <- err
			}()
			<-entered
			closed := make(chan error, 1)
			go func() { closed <- target.Close(ctx) }()
			if err := <-done; !errors.Is(err, hub.ErrClientDisconnected) {
				t.Fatalf("hold then disconnect: %v; want ErrClientDisconnected", err)
			}
			unblock()
			if err := <-closed; err != nil {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

// TestClientResultBackplaneDown: with the asking node's backplane down, a client invocation for
// a connection of another node fails at once, saying the other nodes were not reached; a
// connection of the asking node itself still answers.
func TestClientResultBackplaneDown(t *testing.T) {
	bus := backplane.NewMemoryBus()
	var bps []*backplane.Memory
	nodes := startClusterOn(t, 2, hub.Config{GroupAckTimeout: 5 * time.Second}, resultHubs, func() backplane.Backplane {
		bp := bus.NewBackplane()
		bps = append(bps, bp)
		return bp
	})
	never := make(chan struct{})
	local := resultClient(t, nodes[0], "json", make(chan struct{}, 1), never)
	remote := resultClient(t, nodes[1], "json", make(chan struct{}, 1), never)
	hc, err := nodes[0].node.HubContext("results")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bps[0].SetAvailable(false)
	start := time.Now()
	if _, err := hub.Invoke[int](ctx, hc.Clients, remote.ConnectionID(), "add", 1, 2); !errors.Is(err, actors.ErrNotDeliveredRemotely) {
		t.Fatalf("remote with the backplane down: %v; want ErrNotDeliveredRemotely", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("the failure took %s: it waited for the ack timeout instead of the publish", d)
	}
	if v, err := hub.Invoke[int](ctx, hc.Clients, local.ConnectionID(), "add", 1, 2); err != nil || v != 3 {
		t.Fatalf("local with the backplane down: %d, %v", v, err)
	}
	bps[0].SetAvailable(true)
	if v, err := hub.Invoke[int](ctx, hc.Clients, remote.ConnectionID(), "add", 2, 2); err != nil || v != 4 {
		t.Fatalf("remote after the backplane is back: %d, %v", v, err)
	}
}
