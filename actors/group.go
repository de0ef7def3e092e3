package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/metrics"
)

// group is the actor of one group on one node: it holds the group's local
// members, fans sends out to them, and keeps the node subscribed to the
// group's channel while it has members. A join is answered only once the
// subscription is in effect, so a member gets every later group message
// while the backplane is healthy.
type group struct {
	box    *metrics.MailboxRef // nil without metrics; forgotten when the group stops
	hub    string
	name   string
	bridge *actor.PID

	members   []groupMember     // in join order (swap-removed): fan-out order is deterministic
	index     map[string]int    // connection id -> position in members
	byPID     map[string]string // pid id -> connection id
	state     subState
	pending   []*actor.PID // join requesters waiting for the subscription
	processed uint64       // membership requests handled, reported to the hub
}

// groupMember is a local member: its actor (watched, to drop it when it
// stops) and its outbound queue (where deliveries go).
type groupMember struct {
	id     string
	pid    *actor.PID
	outlet fabric.Outlet
}

type subState int

const (
	unsubscribed subState = iota
	subscribing
	subscribed
)

// groupMembership is a hub-forwarded add or remove of a local connection;
// the group answers reply (if set) with a *GroupResponse.
type groupMembership struct {
	action GroupAction
	connID string
	pid    *actor.PID    // the member's connection actor
	outlet fabric.Outlet // the member's outbound queue
	reply  *actor.PID
}

// groupSubscribed is the bridge's answer to the group's subscribe.
type groupSubscribed struct{ err error }

// groupEmpty tells the hub the group has no members after processed
// membership requests.
type groupEmpty struct {
	name      string
	processed uint64
}

func newGroupProps(hubName, name string, bridge *actor.PID, cfg *fabric.NodeConfig) *actor.Props {
	box := cfg.Mailboxes.Ref(MailboxGroup)
	return trackMailbox(cfg.Seams.Props(func() actor.Actor {
		return &group{hub: hubName, name: name, bridge: bridge, index: map[string]int{}, byPID: map[string]string{}, box: box}
	}), box)
}

// Receive dispatches.
func (g *group) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *send:
		g.fanOut(m)
		finishSend(ctx, g.bridge, m)
	case *groupMembership:
		g.processed++
		if m.action == GroupAdd {
			g.onAdd(ctx, m)
		} else {
			g.remove(ctx, m.connID)
			answer(ctx, m.reply, &GroupResponse{})
		}
	case *groupSubscribed:
		g.onSubscribed(ctx, m.err)
	case *actor.Terminated:
		if id, ok := g.byPID[m.Who.Id]; ok {
			g.remove(ctx, id)
		}
	case *actor.Stopped:
		g.box.Remove()
	}
}

func (g *group) onAdd(ctx actor.Context, m *groupMembership) {
	if _, ok := g.index[m.connID]; !ok {
		g.index[m.connID] = len(g.members)
		g.members = append(g.members, groupMember{id: m.connID, pid: m.pid, outlet: m.outlet})
		g.byPID[m.pid.Id] = m.connID
		ctx.Watch(m.pid)
	}
	switch g.state {
	case subscribed:
		answer(ctx, m.reply, &GroupResponse{})
	case subscribing:
		g.pending = append(g.pending, m.reply)
	case unsubscribed:
		g.pending = append(g.pending, m.reply)
		g.state = subscribing
		ctx.Send(g.bridge, &subscribeRequest{Hub: g.hub, Routes: g.routes(), Reply: ctx.Self(), OK: &groupSubscribed{}, Failed: func(err error) any { return &groupSubscribed{err: err} }})
	}
}

func (g *group) onSubscribed(ctx actor.Context, err error) {
	if err != nil {
		// The join still holds locally; the backplane restores the
		// subscription when it recovers and reports the gap.
		ctx.Logger().Warn("group subscription failed; members get local messages until the backplane recovers", "group", g.name, "err", err)
	}
	g.state = subscribed
	g.unsubscribeIfEmpty(ctx) // everyone may have left while we subscribed
	for _, p := range g.pending {
		answer(ctx, p, &GroupResponse{})
	}
	g.pending = nil
}

func (g *group) remove(ctx actor.Context, connID string) {
	i, ok := g.index[connID]
	if !ok {
		return
	}
	mem := g.members[i]
	last := len(g.members) - 1
	g.members[i] = g.members[last]
	g.index[g.members[i].id] = i
	g.members[last] = groupMember{}
	g.members = g.members[:last]
	delete(g.index, connID)
	delete(g.byPID, mem.pid.Id)
	ctx.Unwatch(mem.pid)
	g.unsubscribeIfEmpty(ctx)
}

func (g *group) unsubscribeIfEmpty(ctx actor.Context) {
	if len(g.members) > 0 || g.state != subscribed {
		return
	}
	g.state = unsubscribed
	ctx.Send(g.bridge, &subscribeRequest{Hub: g.hub, Routes: g.routes(), Unsubscribe: true})
	ctx.Send(ctx.Parent(), &groupEmpty{name: g.name, processed: g.processed})
}

// routes is what the group subscribes the node to: its own route.
func (g *group) routes() []Route { return []Route{{Kind: RouteGroup, Name: g.name}} }

func (g *group) fanOut(s *send) {
	r := s.route
	for _, mem := range g.members {
		if len(r.Excluded) == 0 || !r.excludes(mem.id) {
			deliver(mem.outlet, s.payload)
		}
	}
}
