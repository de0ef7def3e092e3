package hub_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/internal/redistest"
	"github.com/hubfabric/hubfabric/protocol"
)

// moverHub joins groups, records calls and counts its lifecycle hooks.
type moverHub struct {
	statefulHub
	connected    atomic.Int32
	disconnected atomic.Int32
}

func (h *moverHub) OnConnected(*hub.Context) error { h.connected.Add(1); return nil }
func (h *moverHub) OnDisconnected(c *hub.Context, err error) {
	h.disconnected.Add(1)
	h.statefulHub.OnDisconnected(c, err)
}

// Join adds the caller to group g.
func (h *moverHub) Join(c *hub.Context, g string) error {
	return c.Groups.Add(c, c.ConnectionID, g)
}

// statefulReader reads a stateful connection's messages as the official
// clients do: it numbers the trackable ones and, after a reconnect, skips
// what it already has (by the server's Sequence).
type statefulReader struct {
	c        *rawConn
	received int64 // sequence id of the last trackable message read
	next     int64 // sequence id of the next message on this socket
}

// read returns the next Invocation that is new to the client, skipping
// Pings, Acks and resent duplicates; Completions are returned too.
func (r *statefulReader) read() protocol.Message {
	r.c.t.Helper()
	for {
		m := r.c.next()
		switch m := m.(type) {
		case *protocol.Ack:
			continue
		case *protocol.Sequence:
			r.next = m.SequenceID
			continue
		}
		if t := m.MessageType(); t < protocol.TypeInvocation || t > protocol.TypeCancelInvocation {
			return m
		}
		seq := r.next
		r.next++
		if seq <= r.received {
			continue // resent; the client has it
		}
		r.received = seq
		return m
	}
}

// handOverBackplanes are the backplanes a hand-over is tested on: the
// in-memory bus, one redis-server, and a 3-master Redis Cluster (sharded
// pub/sub). Each returns a factory for the nodes of one test.
func handOverBackplanes() []struct {
	name string
	new  func(t testing.TB) func() backplane.Backplane
} {
	return []struct {
		name string
		new  func(t testing.TB) func() backplane.Backplane
	}{
		{"memory", func(testing.TB) func() backplane.Backplane {
			bus := backplane.NewMemoryBus()
			return func() backplane.Backplane { return bus.NewBackplane() }
		}},
		{"redis", func(t testing.TB) func() backplane.Backplane {
			return redisBackplanes(t, redistest.StartStandalone(t).Addr)
		}},
		{"redis-cluster", func(t testing.TB) func() backplane.Backplane {
			cl := redistest.StartCluster(t, 3)
			return redisBackplanes(t, strings.Join(cl.Addrs, ","))
		}},
	}
}

// alice identifies every caller as user alice.
var alice = auth.AuthenticatorFunc(func(*http.Request) (auth.Identity, error) { return auth.Identity{UserID: "alice"}, nil })

// untilCompletion reads the string arguments of the invocations that come
// before the next Completion, which must not carry an error (what names
// the call in the failure).
func (r *statefulReader) untilCompletion(what string) []string {
	r.c.t.Helper()
	var got []string
	for {
		switch m := r.read().(type) {
		case *protocol.Invocation:
			var s string
			r.c.bind(m.Arguments[0], &s)
			got = append(got, s)
		case *protocol.Completion:
			if m.Error != "" {
				r.c.t.Fatalf("%s: %s", what, m.Error)
			}
			return got
		default:
			r.c.t.Fatalf("%s: unexpected %T", what, m)
		}
	}
}

// TestStatefulHandOver: a stateful client whose socket drops and whose reconnect lands on
// the other node moves there. Eight senders (a connection, a user, a group and all, from each
// node) send throughout, before, during and after the move; the client gets every message
// once, in order per sender, its resent invocation runs once, OnConnected ran once and
// OnDisconnected never, and after the move it is served by the new node. On each backplane,
// with each protocol.
func TestStatefulHandOver(t *testing.T) {
	for _, bp := range handOverBackplanes() {
		t.Run(bp.name, func(t *testing.T) {
			newBackplane := bp.new(t)
			for _, p := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
				t.Run(p.Name(), func(t *testing.T) { checkStatefulHandOver(t, p, newBackplane) })
			}
		})
	}
}

func checkStatefulHandOver(t *testing.T, p protocol.HubProtocol, newBackplane func() backplane.Backplane) {
	h := &moverHub{statefulHub: statefulHub{gone: make(chan error, 1)}}
	nodes := startClusterOn(t, 2, hub.Config{StatefulReconnect: true, StatefulReconnectWindow: 5 * time.Second, GroupAckTimeout: 2 * time.Second, Authenticator: alice},
		func() map[string]any { return map[string]any{"s": h} }, newBackplane)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, token, id := dialStateful(t, nodes[0], p)
	c.send(&protocol.Invocation{InvocationID: "1", Target: "Join", Arguments: []any{"g"}})
	r := &statefulReader{c: c, next: 1}
	if m, ok := r.read().(*protocol.Completion); !ok || m.Error != "" {
		t.Fatalf("join: %+v", m)
	}

	const perSender = 40
	type sender struct {
		name string
		send func(ctx context.Context, s string) error
	}
	var senders []sender
	for i, n := range nodes {
		hc, err := n.node.HubContext("s")
		if err != nil {
			t.Fatal(err)
		}
		senders = append(senders,
			sender{fmt.Sprintf("conn%d", i), func(ctx context.Context, s string) error { return hc.Clients.Client(id).Send(ctx, "got", s) }},
			sender{fmt.Sprintf("user%d", i), func(ctx context.Context, s string) error { return hc.Clients.User("alice").Send(ctx, "got", s) }},
			sender{fmt.Sprintf("group%d", i), func(ctx context.Context, s string) error { return hc.Clients.Group("g").Send(ctx, "got", s) }},
			sender{fmt.Sprintf("all%d", i), func(ctx context.Context, s string) error { return hc.Clients.All().Send(ctx, "got", s) }},
		)
	}
	// Each sender sends half before the drop (while the client reads), the rest
	// from the drop on, through the move.
	var wg sync.WaitGroup
	dropped := make(chan struct{})
	errs := make(chan error, len(senders))
	for _, s := range senders {
		wg.Go(func() {
			for i := range perSender {
				if i == perSender/2 {
					<-dropped
				}
				if err := s.send(ctx, fmt.Sprintf("%s-%d", s.name, i)); err != nil {
					errs <- fmt.Errorf("%s %d: %w", s.name, i, err)
					return
				}
			}
		})
	}
	got := map[string][]int{}
	total := 0
	defer func() {
		if t.Failed() {
			t.Logf("the client got %d of %d messages: %v", total, len(senders)*perSender, got)
		}
	}()
	take := func(m protocol.Message, conn *rawConn) {
		inv, ok := m.(*protocol.Invocation)
		if !ok {
			t.Fatalf("unexpected %T %+v", m, m)
		}
		var s string
		conn.bind(inv.Arguments[0], &s)
		name, n, _ := strings.Cut(s, "-")
		var k int
		fmt.Sscan(n, &k)
		got[name] = append(got[name], k)
		total++
	}
	for total < 10 {
		take(r.read(), c)
	}
	c.ws.CloseNow() // the network drops
	close(dropped)

	c2 := reattach(t, nodes[1], p, token)
	// The client resends its invocation, which the old node already ran.
	c2.send(&protocol.Sequence{SequenceID: 1})
	c2.send(&protocol.Invocation{InvocationID: "1", Target: "Join", Arguments: []any{"g"}})
	r.c = c2
	for total < len(senders)*perSender {
		take(r.read(), c2)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, s := range senders {
		want := make([]int, perSender)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(got[s.name], want) {
			t.Errorf("%s: got %v, want 0..%d once each, in order", s.name, got[s.name], perSender-1)
		}
	}

	// Served by the new node: a call runs, and sends from both nodes arrive.
	c2.send(&protocol.Invocation{InvocationID: "2", Target: "Record", Arguments: []any{7}})
	if m, ok := r.read().(*protocol.Completion); !ok || m.Error != "" {
		t.Fatalf("call after the move: %+v", m)
	}
	for _, s := range senders {
		if err := s.send(ctx, s.name+"-after"); err != nil {
			t.Fatal(err)
		}
		var v string
		inv, ok := r.read().(*protocol.Invocation)
		if !ok {
			t.Fatalf("%s after the move: not an invocation", s.name)
		}
		c2.bind(inv.Arguments[0], &v)
		if v != s.name+"-after" {
			t.Fatalf("%s after the move: got %q", s.name, v)
		}
	}
	if got := h.recorded(); !slices.Equal(got, []int{7}) {
		t.Errorf("the hub ran Record %v, want [7]", got)
	}
	if n, d := h.connected.Load(), h.disconnected.Load(); n != 1 || d != 0 {
		t.Errorf("OnConnected ran %d times and OnDisconnected %d, want 1 and 0", n, d)
	}

	// It ends on the new node like any other connection.
	c2.send(&protocol.Close{})
	c2.ws.Close(websocket.StatusNormalClosure, "")
	select {
	case <-h.gone:
	case <-ctx.Done():
		t.Fatal("OnDisconnected did not run on the new node")
	}
}

// TestStatefulHandOverBackAndForth: one connection moves a→b→a→b→a. Each move lands on a
// node it was on before (whose token it already used there), keeps its user and group, and
// gets what was sent to it while it was away, once, in order.
func TestStatefulHandOverBackAndForth(t *testing.T) {
	p := protocol.JSON
	h := &moverHub{statefulHub: statefulHub{gone: make(chan error, 1)}}
	nodes := startCluster(t, 2, hub.Config{StatefulReconnect: true, StatefulReconnectWindow: 10 * time.Second, GroupAckTimeout: 2 * time.Second, Authenticator: alice},
		func() map[string]any { return map[string]any{"s": h} })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, token, id := dialStateful(t, nodes[0], p)
	r := &statefulReader{c: c, next: 1}
	c.send(&protocol.Invocation{InvocationID: "join", Target: "Join", Arguments: []any{"g"}})
	if m, ok := r.read().(*protocol.Completion); !ok || m.Error != "" {
		t.Fatalf("join: %+v", m)
	}
	for i := range 4 {
		c.ws.CloseNow()
		from, to := nodes[i%2], nodes[(i+1)%2]
		hc, err := from.node.HubContext("s")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{fmt.Sprintf("conn-%d", i), fmt.Sprintf("user-%d", i), fmt.Sprintf("group-%d", i)}
		for _, err := range []error{
			hc.Clients.Client(id).Send(ctx, "got", want[0]),
			hc.Clients.User("alice").Send(ctx, "got", want[1]),
			hc.Clients.Group("g").Send(ctx, "got", want[2]),
		} {
			if err != nil {
				t.Fatalf("move %d: send while away: %v", i, err)
			}
		}
		c = reattach(t, to, p, token)
		r.c = c
		// The client's own messages so far (Join, then one Record per move) all
		// reached the node: it resends none, and its next one is number 2+i.
		c.send(&protocol.Sequence{SequenceID: int64(2 + i)})
		c.send(&protocol.Invocation{InvocationID: fmt.Sprint(i), Target: "Record", Arguments: []any{i}})
		got := r.untilCompletion(fmt.Sprintf("move %d: the call after the reconnect", i))
		if !slices.Equal(got, want) {
			t.Fatalf("move %d: got %q, want %q", i, got, want)
		}
	}
	if got := h.recorded(); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("the hub ran Record %v, want [0 1 2 3]", got)
	}
	if n, d := h.connected.Load(), h.disconnected.Load(); n != 1 || d != 0 {
		t.Errorf("OnConnected ran %d times and OnDisconnected %d, want 1 and 0", n, d)
	}
}
