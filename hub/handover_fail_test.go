package hub_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/actors"
	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/internal/redistest"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// endReason reads c until its connection ends and returns why: the error
// of a SignalR Close message, or else the WebSocket close reason.
func endReason(t *testing.T, c *rawConn) string {
	t.Helper()
	for {
		_, data, err := c.ws.Read(c.ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Reason
			}
			t.Fatalf("the connection did not end with a reason: %v", err)
		}
		msgs, _, err := c.proto.ParseMessages(data, 1<<20)
		if err != nil {
			t.Fatalf("parse %q: %v", data, err)
		}
		for _, m := range msgs {
			if cl, ok := m.(*protocol.Close); ok {
				return cl.Error
			}
		}
	}
}

// resume reattaches a stateful client on tn after a drop and returns the
// invocations it gets before the Record call n completes: what the node
// kept for it while it was away, each once (the client has seen nothing
// since the drop).
func resume(t *testing.T, tn *testNode, p protocol.HubProtocol, token string, n int) []string {
	t.Helper()
	c := reattach(t, tn, p, token)
	c.send(&protocol.Sequence{SequenceID: 1})
	c.send(&protocol.Invocation{InvocationID: "r", Target: "Record", Arguments: []any{n}})
	r := &statefulReader{c: c}
	return r.untilCompletion("Record after the resume")
}

// dropWithPending connects a stateful client to tn, drops its socket, and
// sends it "kept" from tn's hub while it is away.
func dropWithPending(t *testing.T, tn *testNode, p protocol.HubProtocol) (token, id string) {
	t.Helper()
	c, token, id := dialStateful(t, tn, p)
	c.ws.CloseNow()
	hc, err := tn.node.HubContext("s")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hc.Clients.Client(id).Send(ctx, "got", "kept"); err != nil {
		t.Fatalf("send while the client is away: %v", err)
	}
	return token, id
}

// TestHandOverRefused: when a stateful connection cannot move to the node its client
// reconnected to, that node says why (the client's connection ends with the reason) and
// nothing that was accepted for the connection is lost: where the old node still holds it, a
// reconnect there resumes with everything.
func TestHandOverRefused(t *testing.T) {
	p := protocol.JSON
	cfg := hub.Config{StatefulReconnect: true, StatefulReconnectWindow: 10 * time.Second, GroupAckTimeout: time.Second}
	hubs := func(h *moverHub) func() map[string]any {
		return func() map[string]any { return map[string]any{"s": h} }
	}

	t.Run("nobody owns it", func(t *testing.T) {
		h := &moverHub{statefulHub: statefulHub{gone: make(chan error, 1)}}
		nodes := startCluster(t, 2, cfg, hubs(h))
		c, token, _ := dialStateful(t, nodes[0], p)
		c.send(&protocol.Close{}) // it ends on its node: no one holds its state any more
		c.ws.Close(websocket.StatusNormalClosure, "")
		<-h.gone
		c2 := reattach(t, nodes[1], p, token)
		c2.send(&protocol.Sequence{SequenceID: 1})
		// Which refusal the client hears depends on how far the old node
		// got in forgetting the connection: OnDisconnected runs just before
		// it does (it answers that the connection is closing), then it
		// stops answering for it, and its route channel is unsubscribed
		// last (until then the ask waits GroupAckTimeout for an answer).
		why := endReason(t, c2)
		refused := false
		for _, reason := range []string{"no node has connection", "the connection is closing", "no node answered for the connection"} {
			refused = refused || strings.Contains(why, reason)
		}
		if !refused {
			t.Fatalf("the resume ended with %q, want that no node has the connection (or that it is closing, or that none answered)", why)
		}
		// The node goes on serving others.
		other, _, _ := dialStateful(t, nodes[1], p)
		other.send(&protocol.Invocation{InvocationID: "1", Target: "Record", Arguments: []any{1}})
		if m, ok := other.next().(*protocol.Completion); !ok || m.Error != "" {
			t.Fatalf("a new client of the node: %+v", m)
		}
	})

	t.Run("classic pub/sub on a cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3)
		classic := func() backplane.Backplane {
			bp, err := redisbp.NewFromString(strings.Join(cl.Addrs, ","), func(o *redisbp.Options) { o.Sharded = redisbp.ShardedOff })
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = bp.Close() })
			return bp
		}
		h := &moverHub{statefulHub: statefulHub{gone: make(chan error, 1)}}
		nodes := startClusterOn(t, 2, cfg, hubs(h), classic)
		token, _ := dropWithPending(t, nodes[0], p)
		c2 := reattach(t, nodes[1], p, token)
		c2.send(&protocol.Sequence{SequenceID: 1})
		if why := endReason(t, c2); !strings.Contains(why, "classic pub/sub") {
			t.Fatalf("the resume ended with %q, want the backplane named as the reason", why)
		}
		if got := resume(t, nodes[0], p, token, 1); len(got) != 1 || got[0] != "kept" {
			t.Fatalf("back on the old node the client got %q, want [kept]", got)
		}
	})

	t.Run("redis down", func(t *testing.T) {
		srv := redistest.StartStandalone(t)
		restored := make(chan string, 8)
		h := &moverHub{statefulHub: statefulHub{gone: make(chan error, 1)}}
		var nodes []*testNode
		for _, id := range []string{"a", "b"} {
			c := cfg
			c.NodeID, c.TokenSecret = id, []byte("cluster secret")
			c.Backplane = redisBackplanes(t, srv.Addr+",connectTimeout=500")()
			c.OnBackplaneEvent = func(e backplane.Event) {
				if e.Kind == backplane.EventRestored {
					restored <- id
				}
			}
			nodes = append(nodes, startNode(t, c, hubs(h)()))
		}
		token, _ := dropWithPending(t, nodes[0], p)
		srv.Stop()
		c2 := reattach(t, nodes[1], p, token)
		c2.send(&protocol.Sequence{SequenceID: 1})
		if why := endReason(t, c2); why == "" {
			t.Fatal("the resume ended without a reason")
		}
		srv.Restart(t)
		for back := map[string]bool{}; len(back) < 2; {
			back[<-restored] = true
		}
		if got := resume(t, nodes[0], p, token, 1); len(got) != 1 || got[0] != "kept" {
			t.Fatalf("back on the old node the client got %q, want [kept]", got)
		}
	})
}

// dropMarkers is a backplane that loses the hand-over markers it is asked
// to publish, as if the node died in the middle of a hand-over, after it
// sent the connection's state.
type dropMarkers struct{ backplane.Backplane }

func (d dropMarkers) Unwrap() backplane.Backplane { return d.Backplane }

func (d dropMarkers) Publish(ctx context.Context, msgs []backplane.Message) error {
	kept := msgs[:0:0]
	for _, m := range msgs {
		env := &fabricv1.Envelope{}
		if proto.Unmarshal(m.Payload, env) == nil && env.GetHandoverMarker() != nil {
			continue
		}
		kept = append(kept, m)
	}
	return d.Backplane.Publish(ctx, kept)
}

// TestHandOverOldOwnerLost: the old node goes silent in the middle of a hand-over (its
// markers never arrive). The move fails on both sides within the step timeout: the client's
// new connection ends with a reason, the old node ends the connection as a disconnect
// (OnDisconnected runs once), and neither node keeps it.
func TestHandOverOldOwnerLost(t *testing.T) {
	p := protocol.MessagePack
	bus := backplane.NewMemoryBus()
	n := 0
	h := &moverHub{statefulHub: statefulHub{gone: make(chan error, 2)}}
	nodes := startClusterOn(t, 2, hub.Config{StatefulReconnect: true, StatefulReconnectWindow: 10 * time.Second, GroupAckTimeout: 300 * time.Millisecond},
		func() map[string]any { return map[string]any{"s": h} },
		func() backplane.Backplane {
			n++
			if n == 1 {
				return dropMarkers{bus.NewBackplane()}
			}
			return bus.NewBackplane()
		})
	token, id := dropWithPending(t, nodes[0], p)
	c2 := reattach(t, nodes[1], p, token)
	c2.send(&protocol.Sequence{SequenceID: 1})
	if why := endReason(t, c2); !strings.Contains(why, "could not move") {
		t.Fatalf("the new connection ended with %q, want that it could not move", why)
	}
	if err := <-h.gone; err == nil {
		t.Fatal("OnDisconnected ran without the error that ended the connection")
	}
	for i, tn := range nodes {
		hc, err := tn.node.HubContext("s")
		if err != nil {
			t.Fatal(err)
		}
		// The new node lets the connection go just after the client's socket
		// closed: for a moment it may still have it, and the old node may
		// still hold it as moving (an answer that says "try again"; it
		// crosses nodes as text).
		for range 1000 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = hc.Groups.Add(ctx, id, "g")
			cancel()
			if err != nil && !strings.Contains(err.Error(), "is moving to another node") {
				break
			}
		}
		if !errors.Is(err, actors.ErrUnknownConnection) {
			t.Errorf("node %d: adding the connection to a group after the failed move: %v, want ErrUnknownConnection", i, err)
		}
	}
	if c, d := h.connected.Load(), h.disconnected.Load(); c != 1 || d != 1 {
		t.Errorf("OnConnected ran %d times and OnDisconnected %d, want 1 and 1", c, d)
	}
}

// TestHandOverPendingResultAndUsedToken: a client result the old node waits for when the
// connection moves fails with an error saying it moved (the caller calls again), and the node
// the connection left refuses its token for a fresh connection (it admits only a resume).
func TestHandOverPendingResultAndUsedToken(t *testing.T) {
	p := protocol.JSON
	h := &moverHub{statefulHub: statefulHub{gone: make(chan error, 1)}}
	nodes := startCluster(t, 2, hub.Config{StatefulReconnect: true, StatefulReconnectWindow: 10 * time.Second, GroupAckTimeout: 2 * time.Second},
		func() map[string]any { return map[string]any{"s": h} })
	c, token, id := dialStateful(t, nodes[0], p)
	hc, err := nodes[0].node.HubContext("s")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		_, err := hub.Invoke[int](ctx, hc.Clients, id, "add", 1, 2)
		result <- err
	}()
	r := &statefulReader{c: c, next: 1}
	if m, ok := r.read().(*protocol.Invocation); !ok || m.Target != "add" {
		t.Fatalf("the client result request: %+v", m)
	}
	c.ws.CloseNow() // the client never answers; its reconnect lands on node 1
	c2 := reattach(t, nodes[1], p, token)
	c2.send(&protocol.Sequence{SequenceID: 1})
	c2.send(&protocol.Invocation{InvocationID: "1", Target: "Record", Arguments: []any{1}})
	r.c = c2
	r.untilCompletion("a call after the move")
	if err := <-result; !errors.Is(err, actors.ErrClientDisconnected) || !strings.Contains(err.Error(), "moved to another node") {
		t.Fatalf("the pending client result: %v, want that the connection moved", err)
	}

	fresh := reattach(t, nodes[0], p, token)
	fresh.writeText(string(protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: p.Name(), Version: 2})))
	if why := endReason(t, fresh); !strings.Contains(why, "already used") {
		t.Fatalf("a fresh connection with the token on the node it left ended with %q, want the token refused as used", why)
	}
}
