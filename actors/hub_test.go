package actors

import (
	"context"
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/protocol"
)

// TestRouteSingleNode sends on every route kind on a node alone on a
// private Memory: exactly the right outlets get the record once, each in
// its protocol, before the SendResponse; and nothing is published, since
// the Memory's Audience says no other node listens.
func TestRouteSingleNode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		groups map[string][]string // group -> members, added before the send
		route  Route
		want   []string // connection ids that get the record
	}{
		{name: "all", route: Route{Kind: RouteAll}, want: []string{"a", "b", "c", "d"}},
		{name: "all excluding two", route: Route{Kind: RouteAll, Excluded: []string{"c", "d"}}, want: []string{"a", "b"}},
		{name: "connection", route: Route{Kind: RouteConnection, Name: "b"}, want: []string{"b"}},
		{name: "unknown connection", route: Route{Kind: RouteConnection, Name: "zz"}},
		{name: "user with two connections", route: Route{Kind: RouteUser, Name: "u1"}, want: []string{"a", "b"}},
		{name: "user with one connection", route: Route{Kind: RouteUser, Name: "u2"}, want: []string{"c"}},
		{name: "unknown user", route: Route{Kind: RouteUser, Name: "nobody"}},
		{name: "group", groups: map[string][]string{"g": {"a", "c", "d"}, "h": {"b"}}, route: Route{Kind: RouteGroup, Name: "g"}, want: []string{"a", "c", "d"}},
		{name: "group excluding one", groups: map[string][]string{"g": {"a", "c", "d"}}, route: Route{Kind: RouteGroup, Name: "g", Excluded: []string{"d"}}, want: []string{"a", "c"}},
		{name: "unknown group", groups: map[string][]string{"g": {"a"}}, route: Route{Kind: RouteGroup, Name: "other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sys := newTestSystem(t)
			n := startNode(t, sys, "n1", backplane.NewMemory(), nil)
			conns := map[string]*testConn{
				"a": n.connect("a", "u1", protocol.JSON),
				"b": n.connect("b", "u1", protocol.MessagePack),
				"c": n.connect("c", "u2", protocol.JSON),
				"d": n.connect("d", "", protocol.MessagePack),
			}
			for g, members := range tt.groups {
				for _, m := range members {
					n.mustGroup(GroupAdd, m, g)
				}
			}
			n.mustSend(tt.route, "m1")
			// No waiting: the answer comes only after the local fan-out.
			for id, c := range conns {
				if contains(tt.want, id) {
					checkRecords(t, c.out, "m1")
				} else {
					checkRecords(t, c.out)
				}
			}
			if got := n.cfg.Counters.Published.Load(); got != 0 {
				t.Errorf("Published = %d on a private Memory, want 0", got)
			}
			if got := n.cfg.Counters.PublishFailed.Load(); got != 0 {
				t.Errorf("PublishFailed = %d, want 0", got)
			}
		})
	}
}

// TestRouteTwoNodes sends from node A on every route kind, with
// connections on A and on B sharing one MemoryBus: each recipient, on
// either node, gets the record exactly once in its protocol; A publishes
// unless the one recipient is local; B, which received the send, never
// publishes it again (and A never gets it back).
func TestRouteTwoNodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		groupsA       map[string][]string // members added on A
		groupsB       map[string][]string // members added on B
		route         Route
		want          []string
		wantPublished uint64 // by A
	}{
		{name: "all excluding a remote connection", route: Route{Kind: RouteAll, Excluded: []string{"b2"}}, want: []string{"a1", "a2", "b1"}, wantPublished: 1},
		{name: "connection on the other node", route: Route{Kind: RouteConnection, Name: "b1"}, want: []string{"b1"}, wantPublished: 1},
		{name: "local connection", route: Route{Kind: RouteConnection, Name: "a1"}, want: []string{"a1"}, wantPublished: 0},
		{name: "user on both nodes", route: Route{Kind: RouteUser, Name: "u1"}, want: []string{"a1", "b1"}, wantPublished: 1},
		{name: "group on both nodes", groupsA: map[string][]string{"g": {"a2"}}, groupsB: map[string][]string{"g": {"b1"}}, route: Route{Kind: RouteGroup, Name: "g"}, want: []string{"a2", "b1"}, wantPublished: 1},
		{name: "group excluding a remote member", groupsA: map[string][]string{"g": {"a2"}}, groupsB: map[string][]string{"g": {"b1", "b2"}}, route: Route{Kind: RouteGroup, Name: "g", Excluded: []string{"b1"}}, want: []string{"a2", "b2"}, wantPublished: 1},
		{name: "group only on the other node", groupsB: map[string][]string{"g": {"b2"}}, route: Route{Kind: RouteGroup, Name: "g"}, want: []string{"b2"}, wantPublished: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sys := newTestSystem(t)
			bus := backplane.NewMemoryBus()
			a := startNode(t, sys, "A", bus.NewBackplane(), nil)
			b := startNode(t, sys, "B", bus.NewBackplane(), nil)
			onA := map[string]*testConn{
				"a1": a.connect("a1", "u1", protocol.JSON),
				"a2": a.connect("a2", "u2", protocol.MessagePack),
			}
			onB := map[string]*testConn{
				"b1": b.connect("b1", "u1", protocol.MessagePack),
				"b2": b.connect("b2", "u2", protocol.JSON),
			}
			for g, members := range tt.groupsA {
				for _, m := range members {
					a.mustGroup(GroupAdd, m, g)
				}
			}
			for g, members := range tt.groupsB {
				for _, m := range members {
					b.mustGroup(GroupAdd, m, g)
				}
			}

			a.mustSend(tt.route, "m1")
			for id, c := range onA { // queued before the answer
				if n := len(c.out.recordsNow()); n != count(tt.want, id) {
					t.Errorf("%s has %d records right after the SendResponse, want %d", id, n, count(tt.want, id))
				}
			}
			if got := a.cfg.Counters.Published.Load(); got != tt.wantPublished {
				t.Errorf("A published %d, want %d", got, tt.wantPublished)
			}
			for id, c := range onB {
				if contains(tt.want, id) {
					c.out.waitRecords(t, 1)
				}
			}

			// Barrier: B sends "marker" to all. B's bridge handles it after
			// anything B's hub handed it before, so B's count tells whether it
			// published m1 again; the Memory delivers in publish order, so A
			// gets the marker after any echo of m1.
			b.mustSend(Route{Kind: RouteAll}, "marker")
			if got := b.cfg.Counters.Published.Load(); got != 1 {
				t.Errorf("B published %d, want 1 (its marker only): a send from another node was published again", got)
			}
			for id, c := range onA {
				c.out.waitRecords(t, count(tt.want, id)+1)
			}
			for id, c := range merge(onA, onB) {
				if contains(tt.want, id) {
					checkRecords(t, c.out, "m1", "marker")
				} else {
					checkRecords(t, c.out, "marker")
				}
			}
			if got := a.cfg.Counters.Published.Load(); got != tt.wantPublished {
				t.Errorf("A published %d after B's marker, want still %d", got, tt.wantPublished)
			}
		})
	}
}

// TestRoutePublishWithoutAudience runs a node on a backplane that cannot
// tell who listens (like Redis): a send to a local connection is still not
// published (connection ids are unique), every other route is, and the
// node's own publication, which its backplane hands back to it, is
// dropped rather than delivered a second time.
func TestRoutePublishWithoutAudience(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		route         Route
		want          []string
		wantPublished uint64
	}{
		{name: "local connection", route: Route{Kind: RouteConnection, Name: "a"}, want: []string{"a"}, wantPublished: 0},
		{name: "all", route: Route{Kind: RouteAll}, want: []string{"a", "b"}, wantPublished: 1},
		{name: "user", route: Route{Kind: RouteUser, Name: "u1"}, want: []string{"a"}, wantPublished: 1},
		{name: "group", route: Route{Kind: RouteGroup, Name: "g"}, want: []string{"b"}, wantPublished: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sys := newTestSystem(t)
			bp := backplane.NewMemory()
			n := startNode(t, sys, "n1", blindBackplane{bp}, nil)
			conns := map[string]*testConn{
				"a": n.connect("a", "u1", protocol.JSON),
				"b": n.connect("b", "u2", protocol.MessagePack),
			}
			n.mustGroup(GroupAdd, "b", "g")
			n.mustSend(tt.route, "m1")
			if got := n.cfg.Counters.Published.Load(); got != tt.wantPublished {
				t.Errorf("Published = %d, want %d", got, tt.wantPublished)
			}
			// Barrier: a send from another node, published on the same
			// Memory after m1's echo, so delivered after it.
			if err := bp.Publish(context.Background(), []backplane.Message{{Channel: routeChannel("chat", Route{Kind: RouteAll}), Payload: invocationEnvelope(t, "other", "marker")}}); err != nil {
				t.Fatal(err)
			}
			for id, c := range conns {
				c.out.waitRecords(t, count(tt.want, id)+1)
				if contains(tt.want, id) {
					checkRecords(t, c.out, "m1", "marker")
				} else {
					checkRecords(t, c.out, "marker")
				}
			}
		})
	}
}

// TestSendAnsweredAfterLocalFanOut holds the one recipient's Enqueue
// (and with it the hub or group actor delivering): the SendResponse is not
// given while it is held. A barrier the bridge answers at once, sent once
// the Enqueue is held, reaches the requester first; the SendResponse
// follows the release.
func TestSendAnsweredAfterLocalFanOut(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		route Route
	}{
		{name: "all", route: Route{Kind: RouteAll}},
		{name: "connection", route: Route{Kind: RouteConnection, Name: "c"}},
		{name: "user", route: Route{Kind: RouteUser, Name: "u"}},
		{name: "group", route: Route{Kind: RouteGroup, Name: "g"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sys := newTestSystem(t)
			n := startNode(t, sys, "n1", backplane.NewMemory(), nil)
			c := n.connect("c", "u", protocol.JSON)
			n.mustGroup(GroupAdd, "c", "g")
			release := c.out.blockEnqueue(t)
			p := newProbe(t, n.root)
			req, err := NewSendRequest(tt.route, "m1")
			if err != nil {
				t.Fatal(err)
			}
			n.root.RequestWithCustomSender(n.hub, req, p.pid)
			c.out.waitEntered(t, 1)
			// Answered by the bridge at once (nobody else has "ghost"); the
			// bridge gets it after anything the sender's actor handed it
			// before blocking.
			n.root.Send(n.tree.Bridge, &groupCommand{hub: "chat", req: &GroupRequest{Action: GroupAdd, ConnectionID: "ghost", Group: "g"}, reply: p.pid})
			if m := p.next(t); !isType[*GroupResponse](m) {
				t.Fatalf("requester got %#v first, want the barrier's *GroupResponse: the send was answered before its local fan-out", m)
			}
			release()
			if m, ok := p.next(t).(*SendResponse); !ok || m.Err != nil {
				t.Fatalf("send answered %#v, want a *SendResponse without error", m)
			}
			checkRecords(t, c.out, "m1")
		})
	}
}

// TestRouteArgumentsInBothProtocols checks that the arguments of a send
// reach a JSON and a MessagePack outlet encoded in their own protocol.
func TestRouteArgumentsInBothProtocols(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	n := startNode(t, sys, "n1", backplane.NewMemory(), nil)
	js := n.connect("js", "", protocol.JSON)
	mp := n.connect("mp", "", protocol.MessagePack)
	args := []any{"hello", 42, map[string]any{"k": true}}
	n.mustSend(Route{Kind: RouteAll}, "recv", args...)
	for _, c := range []*testConn{js, mp} {
		got := c.out.recordsNow()
		want := record(t, c.out.protocol, "recv", args...)
		if len(got) != 1 || string(got[0]) != string(want) {
			t.Errorf("%s got %q, want [%q]", c.id, got, want)
		}
	}
	if msgs, _, err := protocol.MessagePack.ParseMessages(mp.out.recordsNow()[0], 1<<20); err != nil || len(msgs) != 1 {
		t.Errorf("the MessagePack outlet's record does not parse as MessagePack: %v %v", msgs, err)
	}
}

// TestConnectDuplicateID refuses a second connection with a connection id
// that is already connected, and keeps the first.
func TestConnectDuplicateID(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	n := startNode(t, sys, "n1", backplane.NewMemory(), nil)
	first := n.connect("a", "", protocol.JSON)
	resp, ok := n.request(n.hub, &fabric.ConnectRequest{
		Info:    &fabric.ConnectionInfo{ID: "a", Hub: "chat", Items: map[string]any{}, Outlet: newOutlet("a-again", protocol.JSON)},
		Invoker: &fakeInvoker{},
	}).(*fabric.ConnectResponse)
	if !ok || resp.Err == nil || resp.Inbound != nil {
		t.Fatalf("second connect of id a answered %#v, want an error", resp)
	}
	n.mustSend(Route{Kind: RouteConnection, Name: "a"}, "m1")
	checkRecords(t, first.out, "m1")
}

func contains(ids []string, id string) bool { return count(ids, id) > 0 }

func count(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

func merge(ms ...map[string]*testConn) map[string]*testConn {
	out := map[string]*testConn{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
