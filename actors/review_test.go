package actors

import (
	"bytes"
	"strings"
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/protocol"
)

// TestBadRequestsAreAnswered: requests an application's actor may build by
// hand that the hub cannot take are answered with an error that says why,
// and the node keeps working (no actor panics and restarts).
func TestBadRequestsAreAnswered(t *testing.T) {
	t.Parallel()
	n := startNode(t, newTestSystem(t), "n1", backplane.NewMemory(), nil)
	a := n.connect("a", "", protocol.JSON)
	good, err := NewSendRequest(Route{Kind: RouteAll}, "m")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		msg  any
		want string
	}{
		{"send not made by NewSendRequest", &SendRequest{Route: Route{Kind: RouteAll}}, "must be made with NewSendRequest"},
		{"To an empty route", good.To(Route{}), "unknown route kind 0"},
		{"To a group without a name", good.To(Route{Kind: RouteGroup}), "needs its name"},
		{"group change without an action", &GroupRequest{ConnectionID: "a", Group: "g"}, "unknown group action 0"},
		{"group change without a group", &GroupRequest{Action: GroupAdd, ConnectionID: "a"}, "needs a connection id and a group name"},
	} {
		var got error
		switch r := n.request(n.hub, tc.msg).(type) {
		case *SendResponse:
			got = r.Err
		case *GroupResponse:
			got = r.Err
		}
		if got == nil || !strings.Contains(got.Error(), tc.want) {
			t.Errorf("%s: answer %v, want an error saying %q", tc.name, got, tc.want)
		}
	}
	n.mustSend(Route{Kind: RouteAll}, "after")
	a.out.waitRecords(t, 1)
	checkRecords(t, a.out, "after")
}

// TestRequestsWithoutSenderDoNotBreakTheBridge: a GroupRequest sent with
// Send (nobody to answer) for a connection the node does not have reaches
// the bridge, which must not panic on the missing reply address: a restart
// would have lost the hub registry, and remote group commands with it.
func TestRequestsWithoutSenderDoNotBreakTheBridge(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	bus := backplane.NewMemoryBus()
	na := startNode(t, sys, "na", bus.NewBackplane(), nil)
	nb := startNode(t, sys, "nb", bus.NewBackplane(), nil)
	b := nb.connect("b", "", protocol.JSON)
	na.root.Send(na.hub, &GroupRequest{Action: GroupAdd, ConnectionID: "nobody", Group: "g"})
	na.root.Send(na.hub, &GroupRequest{Action: GroupAdd, ConnectionID: "b", Group: "g"}) // acked to nobody
	// A remote group command from A still reaches B's connection, so the
	// bridges kept their hub registries.
	if r := na.group(GroupAdd, "b", "g2"); r.Err != nil {
		t.Fatalf("remote add after requests without a sender: %v", r.Err)
	}
	na.mustSend(Route{Kind: RouteGroup, Name: "g2"}, "m")
	b.out.waitRecords(t, 1)
	checkRecords(t, b.out, "m")
}

// TestSendsKeepOrderWhileAGroupStops: a send routed to a group actor just
// before the hub learns the group emptied (so it is still in the stopping
// actor's mailbox) is not overtaken by a later send of the same sender,
// which the hub gets after it decided to stop the group: on another node
// the members get both in the order sent. The group actor is held at two
// points with a receiver middleware to make that interleaving certain.
func TestSendsKeepOrderWhileAGroupStops(t *testing.T) {
	t.Parallel()
	var (
		enteredRemove = make(chan struct{})
		releaseRemove = make(chan struct{})
		enteredM1     = make(chan struct{})
		releaseM1     = make(chan struct{})
	)
	hold := func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			if _, isGroup := c.Actor().(*group); !isGroup {
				next(c, env)
				return
			}
			switch m := env.Message.(type) {
			case *groupMembership:
				if m.action == GroupRemove {
					close(enteredRemove)
					<-releaseRemove
				}
			case *send:
				if bytes.Contains(m.payload.json, []byte(`"m1"`)) {
					close(enteredM1)
					<-releaseM1
				}
			}
			next(c, env)
		}
	}
	sys := newTestSystem(t)
	bus := backplane.NewMemoryBus()
	na := startNode(t, sys, "na", bus.NewBackplane(), func(cfg *fabric.NodeConfig) {
		// Not producer() to tell a group's Props: a hub's connection
		// Props make an actor only when the hub spawns one.
		cfg.Seams.Props = func(producer actor.Producer) *actor.Props {
			return actor.PropsFromProducer(producer, actor.WithReceiverMiddleware(hold))
		}
	})
	nb := startNode(t, sys, "nb", bus.NewBackplane(), nil)
	b := nb.connect("b", "", protocol.JSON)
	na.connect("a", "", protocol.JSON)
	if r := nb.group(GroupAdd, "b", "g"); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := na.group(GroupAdd, "a", "g"); r.Err != nil {
		t.Fatal(r.Err)
	}
	// probe is answered by the hub itself (a remove from a group that does
	// not exist): once it is, the hub has handled what was sent before.
	probe := func() { na.group(GroupRemove, "a", "no-such-group") }
	sendTo := func(target string) *actor.Future {
		req, err := NewSendRequest(Route{Kind: RouteGroup, Name: "g"}, target)
		if err != nil {
			t.Fatal(err)
		}
		return na.root.RequestFuture(na.hub, req, waitTimeout)
	}
	removed := na.root.RequestFuture(na.hub, &GroupRequest{Action: GroupRemove, ConnectionID: "a", Group: "g"}, waitTimeout)
	<-enteredRemove
	f1 := sendTo("m1") // the group is still the hub's: m1 waits in its mailbox
	probe()
	close(releaseRemove) // the group empties, tells the hub, then takes m1
	if _, err := removed.Result(); err != nil {
		t.Fatal(err)
	}
	<-enteredM1
	f2 := sendTo("m2") // the hub has read groupEmpty: the group is stopping
	probe()
	close(releaseM1)
	for _, f := range []*actor.Future{f1, f2} {
		if _, err := f.Result(); err != nil {
			t.Fatal(err)
		}
	}
	b.out.waitRecords(t, 2)
	checkRecords(t, b.out, "m1", "m2")
}

// TestNewSendRequestBadInput: a send without a target, with a route that
// is not one, or with arguments that cannot be encoded is refused with an
// error saying which.
func TestNewSendRequestBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		route  Route
		target string
		args   []any
		want   string
	}{
		{"no target", Route{Kind: RouteAll}, "", nil, "needs a target method name"},
		{"unknown route kind", Route{Kind: 9}, "m", nil, "unknown route kind 9"},
		{"user without a name", Route{Kind: RouteUser}, "m", nil, "needs its name"},
		{"argument that cannot be encoded", Route{Kind: RouteAll}, "m", []any{make(chan int)}, "cannot encode the arguments"},
	} {
		if _, err := NewSendRequest(tc.route, tc.target, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewSendRequest = %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
