package actors

import (
	"github.com/asynkron/protoactor-go/actor"
)

// group is the actor of one group on one node: it holds the group's local
// members, fans messages out to them, and keeps the node subscribed to the
// group's channel while it has members. A join is answered only once the
// subscription is in effect, so a member gets every later group message
// while the backplane is healthy.
type group struct {
	name    string
	channel string
	bridge  *actor.PID

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
	outlet Outlet
}

type subState int

const (
	unsubscribed subState = iota
	subscribing
	subscribed
)

// groupMembership is a hub-forwarded add/remove for a local connection.
type groupMembership struct {
	Request *GroupRequest
	PID     *actor.PID // the member's connection actor
	Outlet  Outlet     // the member's outbound queue
}

// groupSubscribed is the bridge's answer to the group's subscribe.
type groupSubscribed struct{ err error }

// groupEmpty tells the hub the group has no members after Processed
// membership requests.
type groupEmpty struct {
	Name      string
	Processed uint64
}

func newGroupProps(name, channel string, bridge *actor.PID, p PropsFactory) *actor.Props {
	return p(func() actor.Actor {
		return &group{name: name, channel: channel, bridge: bridge, index: map[string]int{}, byPID: map[string]string{}}
	})
}

// Receive dispatches.
func (g *group) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *groupMembership:
		g.processed++
		if m.Request.Action == GroupAdd {
			g.onAdd(ctx, m)
		} else {
			g.remove(ctx, m.Request.ConnectionID)
			ctx.Respond(&GroupResponse{})
		}
	case *groupSubscribed:
		g.onSubscribed(ctx, m.err)
	case *SendRequest:
		g.fanOut(ctx, m.Route, m.Payload)
		ctx.Forward(g.bridge) // publish for other nodes; the bridge answers the sender
	case *remoteDelivery:
		g.fanOut(ctx, m.Route, m.Payload)
	case *actor.Terminated:
		if id, ok := g.byPID[m.Who.Id]; ok {
			g.remove(ctx, id)
		}
	}
}

func (g *group) onAdd(ctx actor.Context, m *groupMembership) {
	id := m.Request.ConnectionID
	if _, ok := g.index[id]; !ok {
		g.index[id] = len(g.members)
		g.members = append(g.members, groupMember{id: id, pid: m.PID, outlet: m.Outlet})
		g.byPID[m.PID.Id] = id
		ctx.Watch(m.PID)
	}
	switch g.state {
	case subscribed:
		ctx.Respond(&GroupResponse{})
	case subscribing:
		g.pending = append(g.pending, ctx.Sender())
	case unsubscribed:
		g.pending = append(g.pending, ctx.Sender())
		g.state = subscribing
		ctx.Request(g.bridge, &subscribeRequest{Channels: []string{g.channel}, Reply: ctx.Self(), OK: &groupSubscribed{}, Failed: func(err error) any { return &groupSubscribed{err: err} }})
	}
}

func (g *group) onSubscribed(ctx actor.Context, err error) {
	if err != nil {
		// The join still holds locally; the backplane restores the
		// subscription when it recovers and reports the gap.
		ctx.Logger().Warn("group subscription failed; members get local messages until the backplane recovers", "group", g.name, "err", err)
	}
	if len(g.members) == 0 {
		// Everyone left while we subscribed.
		g.state = subscribed
		g.unsubscribeIfEmpty(ctx)
	} else {
		g.state = subscribed
	}
	for _, p := range g.pending {
		if p != nil {
			ctx.Send(p, &GroupResponse{})
		}
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
	ctx.Send(g.bridge, &subscribeRequest{Channels: []string{g.channel}, Unsubscribe: true})
	ctx.Send(ctx.Parent(), &groupEmpty{Name: g.name, Processed: g.processed})
}

func (g *group) fanOut(ctx actor.Context, r Route, p *Payload) {
	for _, mem := range g.members {
		if len(r.Excluded) > 0 && r.excludes(mem.id) {
			continue
		}
		deliver(mem.outlet, p)
	}
}
