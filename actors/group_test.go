package actors

import (
	"slices"
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/protocol"
)

// TestGroupAddThenRemove: a removed member gets no more group sends while
// the others still do; the node leaves the group's channel when the last
// member goes and joins it again (before answering) on the next add.
func TestGroupAddThenRemove(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	spy := newSpy(backplane.NewMemory())
	n := startNode(t, sys, "n1", spy, nil)
	a := n.connect("a", "", protocol.JSON)
	b := n.connect("b", "", protocol.MessagePack)
	g := Route{Kind: RouteGroup, Name: "g"}
	ch := routeChannel("chat", g)
	subscriptions := func() int {
		var k int
		spy.read(func() { k = count(spy.subscribed, ch) })
		return k
	}

	n.mustGroup(GroupAdd, "a", "g")
	if got := subscriptions(); got != 1 {
		t.Errorf("after the first add: %d subscriptions of %s, want 1 (the join is answered once it is in effect)", got, ch)
	}
	n.mustGroup(GroupAdd, "b", "g")
	n.mustGroup(GroupAdd, "b", "g") // twice: still one member
	n.mustSend(g, "m1")
	n.mustGroup(GroupRemove, "a", "g")
	n.mustSend(g, "m2")
	n.mustGroup(GroupRemove, "b", "g")
	n.mustSend(g, "m3")
	spy.waitUnsubscribed(t, ch)
	n.mustGroup(GroupAdd, "a", "g")
	if got := subscriptions(); got != 2 {
		t.Errorf("after the add that follows the group's end: %d subscriptions of %s, want 2", got, ch)
	}
	n.mustSend(g, "m4")

	checkRecords(t, a.out, "m1", "m4")
	checkRecords(t, b.out, "m1", "m2")
}

// TestGroupDropsMemberWhoseConnectionEnds: when a member's connection ends
// (its socket closes and the connection actor stops), the group stops
// delivering to it, and leaves the group's channel with the last member.
func TestGroupDropsMemberWhoseConnectionEnds(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	spy := newSpy(backplane.NewMemory())
	n := startNode(t, sys, "n1", spy, nil)
	a := n.connect("a", "", protocol.JSON)
	b := n.connect("b", "", protocol.JSON)
	g := Route{Kind: RouteGroup, Name: "g"}
	n.mustGroup(GroupAdd, "a", "g")
	n.mustGroup(GroupAdd, "b", "g")
	n.mustSend(g, "m1")

	a.close()
	// The hub unsubscribes a's channel when it handles a's Terminated; the
	// group (a watcher) was sent its Terminated before the hub (the parent),
	// and system messages go first, so it drops a before the next send.
	spy.waitUnsubscribed(t, routeChannel("chat", Route{Kind: RouteConnection, Name: "a"}))
	if got := a.inv.disconnects(); got != 1 {
		t.Errorf("Disconnected ran %d times for a, want 1", got)
	}
	n.mustSend(g, "m2")
	checkRecords(t, a.out, "m1")
	checkRecords(t, b.out, "m1", "m2")

	b.close()
	spy.waitUnsubscribed(t, routeChannel("chat", g))
}

// TestGroupJoinAnsweredAfterSubscription holds node B's subscription of the
// group channel: the join is not answered while it is held (a later
// request that the group answers at once is answered first); once it is
// in effect the join is answered, and a group send from node A reaches
// B's member.
func TestGroupJoinAnsweredAfterSubscription(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	bus := backplane.NewMemoryBus()
	a := startNode(t, sys, "A", bus.NewBackplane(), nil)
	spyB := newSpy(bus.NewBackplane())
	b := startNode(t, sys, "B", spyB, nil)
	b1 := b.connect("b1", "", protocol.MessagePack)
	g := Route{Kind: RouteGroup, Name: "g"}
	ch := routeChannel("chat", g)
	release := spyB.holdSubscribe(t, ch)

	p := newProbe(t, b.root)
	b.root.RequestWithCustomSender(b.hub, &GroupRequest{Action: GroupAdd, ConnectionID: "b1", Group: "g"}, p.pid)
	spyB.waitHolding(t, ch)
	// The group fans this out (b1 is a member locally already) and hands
	// it to the bridge, which answers it: after anything the group sent
	// the probe before.
	barrier, err := NewSendRequest(g, "local")
	if err != nil {
		t.Fatal(err)
	}
	b.root.RequestWithCustomSender(b.hub, barrier, p.pid)
	if m := p.next(t); !isType[*SendResponse](m) {
		t.Fatalf("first answer to the probe is %#v, want the barrier's *SendResponse: the join was answered before its subscription was in effect", m)
	}
	release()
	if m, ok := p.next(t).(*GroupResponse); !ok || m.Err != nil {
		t.Fatalf("join answered %#v, want a *GroupResponse without error", m)
	}

	a.mustSend(g, "remote")
	if got := a.cfg.Counters.Published.Load(); got != 1 {
		t.Errorf("A published %d, want 1: B's subscription was not visible after the join", got)
	}
	b1.out.waitRecords(t, 2)
	checkRecords(t, b1.out, "local", "remote")
}

// TestGroupRemoveNonMember: removing a connection that is not a member
// answers without error and leaves the group as it was.
func TestGroupRemoveNonMember(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		members []string // added to g first
		removes []string // then removed, in order
		want    []string // who gets a group send after
	}{
		{name: "no such group", removes: []string{"a"}},
		{name: "group without it", members: []string{"b"}, removes: []string{"a"}, want: []string{"b"}},
		{name: "removed twice", members: []string{"a", "b"}, removes: []string{"a", "a"}, want: []string{"b"}},
		{name: "last member removed twice", members: []string{"a"}, removes: []string{"a", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sys := newTestSystem(t)
			n := startNode(t, sys, "n1", backplane.NewMemory(), nil)
			conns := []*testConn{n.connect("a", "", protocol.JSON), n.connect("b", "", protocol.JSON)}
			for _, m := range tt.members {
				n.mustGroup(GroupAdd, m, "g")
			}
			for _, r := range tt.removes {
				if resp := n.group(GroupRemove, r, "g"); resp.Err != nil {
					t.Errorf("remove %s: %v", r, resp.Err)
				}
			}
			n.mustSend(Route{Kind: RouteGroup, Name: "g"}, "m1")
			for _, c := range conns {
				if slices.Contains(tt.want, c.id) {
					checkRecords(t, c.out, "m1")
				} else {
					checkRecords(t, c.out)
				}
			}
		})
	}
}
