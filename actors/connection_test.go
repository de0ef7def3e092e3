package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// gatedCalls scripts a fakeInvoker: the call with invocation id k blocks
// until proceed(k); the call "1" first waits for mark and then replies a
// StreamItem "marker" (without ending), so the test knows when the
// connection actor has handled everything queued before that reply.
type gatedCalls struct {
	gates map[string]chan struct{}
	mark  chan struct{}
}

func newGatedCalls(ids ...string) *gatedCalls {
	g := &gatedCalls{gates: map[string]chan struct{}{}, mark: make(chan struct{})}
	for _, id := range ids {
		g.gates[id] = make(chan struct{})
	}
	return g
}

func (g *gatedCalls) proceed(id string) { close(g.gates[id]) }

func (g *gatedCalls) invoke(ctx context.Context, call *fabric.Call) {
	id, _ := fabric.InvocationOf(call.Message)
	if id == "1" {
		select {
		case <-g.mark:
			call.Reply(&protocol.StreamItem{InvocationID: id, Item: "marker"})
		case <-ctx.Done():
			return
		}
	}
	select {
	case <-g.gates[id]:
		call.Reply(&protocol.Completion{InvocationID: id})
	case <-ctx.Done():
	}
}

// TestConnectionRunsInvocationsInOrder: with MaxParallelInvocations 1 a
// connection's hub method calls run one at a time, in arrival order: while
// call 1 runs, the connection actor handles calls 2 and 3 without starting
// them, then starts each when the previous one is done; replies reach the
// outlet in order.
func TestConnectionRunsInvocationsInOrder(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	rt := &countingRuntime{}
	n := startNode(t, sys, "n1", backplane.NewMemory(), func(c *fabric.NodeConfig) {
		c.Seams = seam.Seams{Runtime: rt}.OrReal()
	})
	calls := newGatedCalls("1", "2", "3")
	inv := &fakeInvoker{invoke: calls.invoke}
	c := n.connectWith("c", "", newOutlet("c", protocol.JSON), inv)
	startedAre := func(ids ...string) func() bool {
		return func() bool { return slices.Equal(inv.started, ids) }
	}

	c.in.Receive(&protocol.Invocation{InvocationID: "1", Target: "m"})
	inv.waitUntil(t, "call 1 to start", startedAre("1"))
	before := rt.goes.Load()
	c.in.Receive(&protocol.Invocation{InvocationID: "2", Target: "m"})
	c.in.Receive(&protocol.Invocation{InvocationID: "3", Target: "m"})
	// The marker reaches the actor's mailbox after calls 2 and 3.
	close(calls.mark)
	c.out.waitSent(t, 1)
	if got := rt.goes.Load(); got != before {
		t.Errorf("the connection started %d goroutine(s) for calls 2 and 3 while call 1 ran", got-before)
	}

	calls.proceed("1")
	inv.waitUntil(t, "call 2 to start", startedAre("1", "2"))
	calls.proceed("2")
	inv.waitUntil(t, "call 3 to start", startedAre("1", "2", "3"))
	calls.proceed("3")
	sent := c.out.waitSent(t, 4)

	var maxActive int
	inv.read(func() { maxActive = inv.maxActive })
	if maxActive != 1 {
		t.Errorf("%d calls ran at once, want 1", maxActive)
	}
	want := []string{"StreamItem 1", "Completion 1", "Completion 2", "Completion 3"}
	var got []string
	for _, m := range sent {
		switch m := m.(type) {
		case *protocol.StreamItem:
			got = append(got, "StreamItem "+m.InvocationID)
		case *protocol.Completion:
			got = append(got, "Completion "+m.InvocationID)
		default:
			got = append(got, "?")
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("outlet got %v, want %v", got, want)
	}
}

// TestConnectionParallelLimit: with MaxParallelInvocations 2, two calls
// of one connection run at once.
func TestConnectionParallelLimit(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	n := startNode(t, sys, "n1", backplane.NewMemory(), func(c *fabric.NodeConfig) { c.MaxParallelInvocations = 2 })
	calls := newGatedCalls("a", "b")
	inv := &fakeInvoker{invoke: calls.invoke}
	c := n.connectWith("c", "", newOutlet("c", protocol.JSON), inv)
	c.in.Receive(&protocol.Invocation{InvocationID: "a", Target: "m"})
	c.in.Receive(&protocol.Invocation{InvocationID: "b", Target: "m"})
	inv.waitUntil(t, "two calls running at once", func() bool { return inv.active == 2 })
	calls.proceed("a")
	calls.proceed("b")
	c.out.waitSent(t, 2)
}

// TestCloseAll: the hub asks each of its connections to close, with the
// reason and allowReconnect true, as on a server shutdown.
func TestCloseAll(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	n := startNode(t, sys, "n1", backplane.NewMemory(), nil)
	conns := []*testConn{n.connect("a", "u", protocol.JSON), n.connect("b", "u", protocol.MessagePack), n.connect("c", "", protocol.JSON)}
	const reason = "Server is shutting down."
	if _, ok := n.request(n.hub, &fabric.CloseAll{Reason: reason}).(*fabric.CloseAllResponse); !ok {
		t.Fatal("CloseAll not answered with *CloseAllResponse")
	}
	for _, c := range conns {
		if got := c.out.waitClose(t); got != (closeCall{reason, true}) {
			t.Errorf("%s closed with %+v, want %q with allowReconnect", c.id, got, reason)
		}
	}
	// The transport closes the sockets next.
	for _, c := range conns {
		c.close()
	}
	if _, ok := n.request(n.hub, &fabric.WaitNoConnections{}).(*fabric.NoConnections); !ok {
		t.Fatal("WaitNoConnections not answered with *NoConnections")
	}
	for _, c := range conns {
		if got := c.inv.disconnects(); got != 1 {
			t.Errorf("%s: Disconnected ran %d times, want 1", c.id, got)
		}
	}
}

// TestWaitNoConnections: the hub answers WaitNoConnections only once every
// connection has ended (its socket closed, then its Disconnected ran and
// its actor stopped): not while one is left, even after another ended.
func TestWaitNoConnections(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	spy := newSpy(backplane.NewMemory())
	n := startNode(t, sys, "n1", spy, nil)
	c1 := n.connect("c1", "", protocol.JSON)
	c2 := n.connect("c2", "", protocol.JSON)
	p := newProbe(t, n.root)
	n.root.RequestWithCustomSender(n.hub, &fabric.WaitNoConnections{}, p.pid)

	c1.close()
	spy.waitUnsubscribed(t, routeChannel("chat", Route{Kind: RouteConnection, Name: "c1"})) // the hub saw c1 end
	if got := c1.inv.disconnects(); got != 1 {
		t.Errorf("c1: Disconnected ran %d times, want 1", got)
	}
	// Barrier: answered by the hub at once, so after any answer it gave the
	// probe while handling c1's end.
	barrier, err := NewSendRequest(Route{Kind: RouteConnection, Name: "c2"}, "m")
	if err != nil {
		t.Fatal(err)
	}
	n.root.RequestWithCustomSender(n.hub, barrier, p.pid)
	if m := p.next(t); !isType[*SendResponse](m) {
		t.Fatalf("probe got %#v first, want the barrier's *SendResponse: WaitNoConnections answered while c2 is connected", m)
	}

	c2.close()
	if m := p.next(t); !isType[*fabric.NoConnections](m) {
		t.Fatalf("probe got %#v, want *NoConnections", m)
	}
	if got := c2.inv.disconnects(); got != 1 {
		t.Errorf("c2: Disconnected ran %d times before NoConnections, want 1", got)
	}

	// With no connection, it answers at once.
	if _, ok := n.request(n.hub, &fabric.WaitNoConnections{}).(*fabric.NoConnections); !ok {
		t.Fatal("WaitNoConnections on an empty hub not answered with *NoConnections")
	}
}

// TestConnectionActorThatPanicsIsStoppedNotRestarted: a panic in a
// connection actor (here in its outlet's Enqueue, on a call's Completion)
// stops the actor. The client gets a Close with an error that allows a
// reconnect, OnDisconnected runs once with errConnectionFailed, OnConnected
// does not run again (a restart would have), and the hub forgets the
// connection, so its id connects again.
func TestConnectionActorThatPanicsIsStoppedNotRestarted(t *testing.T) {
	t.Parallel()
	for _, closePanics := range []bool{false, true} {
		t.Run(fmt.Sprintf("closePanics=%v", closePanics), func(t *testing.T) {
			t.Parallel()
			testPanickingConnectionActor(t, closePanics)
		})
	}
}

// testPanickingConnectionActor is TestConnectionActorThatPanicsIsStoppedNotRestarted;
// with closePanics the outlet's Close panics too, while the actor stops,
// and the actor still stops and OnDisconnected still runs.
func testPanickingConnectionActor(t *testing.T, closePanics bool) {
	sys := newTestSystem(t)
	n := startNode(t, sys, "n1", backplane.NewMemory(), nil)
	out := newOutlet("c", protocol.JSON)
	out.panicOn = "boom"
	out.panicOnClose = closePanics
	inv := &fakeInvoker{}
	c := n.connectWith("c", "", out, inv)
	c.in.Receive(&protocol.Invocation{InvocationID: "boom", Target: "m"})
	if got := out.waitClose(t); got != (closeCall{"Connection closed with an error.", true}) {
		t.Errorf("closed with %+v, want an error Close that allows a reconnect", got)
	}
	if _, ok := n.request(n.hub, &fabric.WaitNoConnections{}).(*fabric.NoConnections); !ok {
		t.Fatal("WaitNoConnections not answered with *NoConnections")
	}
	inv.read(func() {
		if inv.connects != 1 {
			t.Errorf("Connected ran %d times, want 1", inv.connects)
		}
		if len(inv.disconnected) != 1 || !errors.Is(inv.disconnected[0], errConnectionFailed) {
			t.Errorf("Disconnected ran with %v, want once with %v", inv.disconnected, errConnectionFailed)
		}
	})
	c.closed = true // the transport would close the socket; the actor is gone
	n.connect("c", "", protocol.JSON)
}

// TestConnectionActorStoppedFromOutsideIsNotAFailure: a connection actor
// stopped by someone else (its hub stopping at the end of a shutdown that
// timed out, say) did not fail: its client gets no error Close from it,
// OnDisconnected does not run with errConnectionFailed, and the hub forgets
// it.
func TestConnectionActorStoppedFromOutsideIsNotAFailure(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	n := startNode(t, sys, "n1", backplane.NewMemory(), nil)
	c := n.connect("c", "", protocol.JSON)
	// The hub names a connection's actor c-<id> under itself (hub.register).
	pid := actor.NewPID(n.hub.Address, n.hub.Id+"/c-c")
	if err := n.root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.request(n.hub, &fabric.WaitNoConnections{}).(*fabric.NoConnections); !ok {
		t.Fatal("WaitNoConnections not answered with *NoConnections")
	}
	c.out.read(func() {
		if len(c.out.closes) != 0 {
			t.Errorf("closed with %+v by an actor that did not fail", c.out.closes)
		}
	})
	c.inv.read(func() {
		for _, err := range c.inv.disconnected {
			if errors.Is(err, errConnectionFailed) {
				t.Errorf("Disconnected ran with %v for an actor that did not fail", err)
			}
		}
	})
	c.closed = true // nothing is left to close
}
