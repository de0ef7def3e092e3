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
	pending   []pendingJoin // join requesters waiting for the subscription
	processed uint64        // membership requests handled, reported to the hub
	moving    int           // members with a cut (moving between nodes, cut.go)
	echoSeq   uint64        // the last echo number given to a send fanned out here (cut.go)
	batch     batch         // members whose records wait for the mailbox to run dry
}

// pendingJoin is a join's requester and its answer.
type pendingJoin struct {
	reply  *actor.PID
	answer any
}

// groupMember is a local member: its actor (watched, to drop it when it
// stops) and its outbound queue (where deliveries go).
type groupMember struct {
	id     string
	pid    *actor.PID
	outlet fabric.Outlet
	cut    *cut // set while it moves between nodes
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
	// incoming is set for a connection moving here: it joins with a cut,
	// and the answer is incoming instead of a *GroupResponse.
	incoming *moveSubscribed
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
		return &group{hub: hubName, name: name, bridge: bridge, index: map[string]int{}, byPID: map[string]string{}, box: box, batch: batch{flusher: cfg.Flusher}}
	}), box)
}

// Receive dispatches.
func (g *group) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *send:
		g.fanOut(ctx, m)
		finishSend(ctx, g.bridge, m)
	case flushBatch:
		g.batch.flush()
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
	case *cutMember:
		if i, ok := g.index[m.connID]; ok && g.members[i].cut == nil {
			g.members[i].cut = &cut{marked: true}
			g.moving++
			ctx.Send(g.bridge, m.marker) // after every send of the group handed to the bridge before
		}
	case *markerArrival:
		g.onMarker(ctx, m)
	case *actor.Terminated:
		if id, ok := g.byPID[m.Who.Id]; ok {
			g.remove(ctx, id)
		}
	case *actor.Stopping, *actor.Restarting:
		g.batch.flush() // nothing queued is left unwritten
	case *actor.Stopped:
		g.box.Remove()
	}
}

func (g *group) onAdd(ctx actor.Context, m *groupMembership) {
	if _, ok := g.index[m.connID]; !ok {
		mem := groupMember{id: m.connID, pid: m.pid, outlet: m.outlet}
		if m.incoming != nil {
			mem.cut = &cut{in: true, listening: g.state == subscribed}
			g.moving++
		}
		g.index[m.connID] = len(g.members)
		g.members = append(g.members, mem)
		g.byPID[m.pid.Id] = m.connID
		ctx.Watch(m.pid)
	}
	var ok any = &GroupResponse{}
	if m.incoming != nil {
		ok = m.incoming
	}
	switch g.state {
	case subscribed:
		answer(ctx, m.reply, ok)
	case subscribing:
		g.pending = append(g.pending, pendingJoin{m.reply, ok})
	case unsubscribed:
		g.pending = append(g.pending, pendingJoin{m.reply, ok})
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
	for i := range g.members {
		if c := g.members[i].cut; c != nil && c.in {
			c.listening = true
		}
	}
	g.unsubscribeIfEmpty(ctx) // everyone may have left while we subscribed
	for _, p := range g.pending {
		if ms, ok := p.answer.(*moveSubscribed); ok && err != nil {
			// A connection moving here needs the subscription now: the
			// move fails instead.
			p.answer = &moveSubscribed{connID: ms.connID, key: ms.key, group: ms.group, err: err}
		}
		answer(ctx, p.reply, p.answer)
	}
	g.pending = nil
}

func (g *group) remove(ctx actor.Context, connID string) {
	i, ok := g.index[connID]
	if !ok {
		return
	}
	mem := g.members[i]
	if mem.cut != nil {
		g.moving--
	}
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

func (g *group) fanOut(ctx actor.Context, s *send) {
	r := s.route
	if g.moving == 0 {
		if s.echo {
			return
		}
		for _, mem := range g.members {
			if len(r.Excluded) == 0 || !r.excludes(mem.id) {
				g.batch.deliver(ctx, mem.outlet, s.payload)
			}
		}
		return
	}
	for i := range g.members {
		mem := &g.members[i]
		if (len(r.Excluded) == 0 || !r.excludes(mem.id)) && mem.cut.take(s, &g.echoSeq) {
			g.batch.deliver(ctx, mem.outlet, s.payload)
		}
		if s.echo {
			g.reportIfCut(ctx, mem)
		}
	}
}

// onMarker applies a marker of a moving member.
func (g *group) onMarker(ctx actor.Context, m *markerArrival) {
	i, ok := g.index[m.connID]
	if !ok {
		return
	}
	mem := &g.members[i]
	c := mem.cut
	if c == nil || c.seen || (!c.in && !c.marked) {
		return
	}
	c.seen = true
	if !c.in {
		ctx.Send(ctx.Parent(), &groupCut{connID: mem.id, group: g.name})
		return
	}
	g.reportIfCut(ctx, mem)
}

// reportIfCut tells the hub once a member moving here is cut over; from
// then on it is a member as any other.
func (g *group) reportIfCut(ctx actor.Context, mem *groupMember) {
	if mem.cut != nil && mem.cut.done() {
		mem.cut = nil
		g.moving--
		ctx.Send(ctx.Parent(), &groupCut{connID: mem.id, group: g.name})
	}
}
