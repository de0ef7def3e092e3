package testkit

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// Bus is the simulated Redis: it delivers what a node publishes to every
// node subscribed to the channel, each delivery a scheduler task. Each
// channel's messages reach every subscriber in one order, the order of
// the publishes, as one Redis server (or shard) keeps it; everything else
// interleaves as the seed decides. Faults: extra delivery delay, a
// node partitioned from it, a whole outage.
type Bus struct {
	s     *Scheduler
	trace *Trace

	mu       sync.Mutex
	members  map[string]*SimBackplane // by owner (node incarnation)
	queues   map[string]*fifo
	down     bool          // outage
	maxDelay time.Duration // extra delay of each delivery, chosen by the seed
}

type fifo struct {
	sub     *SimBackplane
	channel string
	items   []busItem
	active  bool
}

// busItem is one message in a fifo and who published it.
type busItem struct {
	pub     *SimBackplane
	payload []byte
}

func newBus(s *Scheduler, tr *Trace) *Bus {
	return &Bus{s: s, trace: tr, members: map[string]*SimBackplane{}, queues: map[string]*fifo{}}
}

// SimBackplane is one node's connection to the Bus; it implements
// backplane.Backplane. Like the Redis backplane it owns the channel prefix:
// on the bus a channel c of the node is prefix+":"+c, so apps with other
// prefixes never hear it. The prefix is an app name NewCluster checked
// (letters, digits, '.', '_', '-': no ':'), so the first ':' ends it and no
// app name reads as the start of another app's channels.
type SimBackplane struct {
	bus    *Bus
	owner  string // scheduler owner (node incarnation)
	prefix string

	h           backplane.Handler
	subs        map[string]bool
	partitioned bool
	closed      bool
	wasDown     bool
}

var _ backplane.Backplane = (*SimBackplane)(nil)

func (b *Bus) newBackplane(owner, prefix string) *SimBackplane {
	p := &SimBackplane{bus: b, owner: owner, prefix: prefix, subs: map[string]bool{}}
	b.mu.Lock()
	b.members[owner] = p
	b.mu.Unlock()
	return p
}

// wire is channel c's name on the bus; local is the inverse.
func (p *SimBackplane) wire(c string) string  { return p.prefix + ":" + c }
func (p *SimBackplane) local(w string) string { return strings.TrimPrefix(w, p.prefix+":") }

func (p *SimBackplane) unavailableLocked() error {
	switch {
	case p.closed:
		return backplane.ErrClosed
	case p.bus.down:
		return fmt.Errorf("testkit: backplane outage: %w", backplane.ErrUnavailable)
	case p.partitioned:
		return fmt.Errorf("testkit: node %s partitioned from the backplane: %w", p.owner, backplane.ErrUnavailable)
	}
	return nil
}

// OneOrderPerChannel implements backplane.ChannelOrder: the bus keeps one
// order per channel, so connections can move between nodes.
func (p *SimBackplane) OneOrderPerChannel() bool { return true }

// Start implements backplane.Backplane.
func (p *SimBackplane) Start(_ context.Context, h backplane.Handler) error {
	p.bus.mu.Lock()
	defer p.bus.mu.Unlock()
	p.h = h
	return nil
}

// Publish implements backplane.Backplane.
func (p *SimBackplane) Publish(_ context.Context, msgs []backplane.Message) error {
	b := p.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := p.unavailableLocked(); err != nil {
		for _, m := range msgs {
			b.trace.add(b.s.Now(), "bp", fmt.Sprintf("%s publish FAILED %s %s", p.owner, p.wire(m.Channel), describe(m.Payload)))
		}
		return err
	}
	owners := make([]string, 0, len(b.members))
	for o := range b.members {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	for _, m := range msgs {
		ch := p.wire(m.Channel)
		b.trace.add(b.s.Now(), "bp", fmt.Sprintf("%s publish %s %s", p.owner, ch, describe(m.Payload)))
		for _, o := range owners {
			sub := b.members[o]
			if sub.closed || !sub.subs[ch] {
				continue
			}
			k := o + "|" + ch
			q := b.queues[k]
			if q == nil {
				q = &fifo{sub: sub, channel: ch}
				b.queues[k] = q
			}
			q.items = append(q.items, busItem{pub: p, payload: slices.Clone(m.Payload)})
			if !q.active {
				q.active = true
				b.scheduleLocked(k, q)
			}
		}
	}
	return nil
}

func (b *Bus) scheduleLocked(k string, q *fifo) {
	var delay time.Duration
	if b.maxDelay > 0 {
		delay = time.Duration(b.s.Intn(int(b.maxDelay))) + 1
	}
	b.s.add(&task{key: "bp/" + k, node: q.sub.owner, label: "deliver " + q.items[0].pub.owner + "->" + q.sub.owner + " " + q.channel, run: func() { b.deliver(k, q) }}, delay)
}

func (b *Bus) deliver(k string, q *fifo) {
	b.mu.Lock()
	if len(q.items) == 0 {
		q.active = false
		b.mu.Unlock()
		return
	}
	item := q.items[0]
	payload := item.payload
	q.items = q.items[1:]
	sub := q.sub
	ok := sub.h != nil && !sub.closed && !sub.partitioned && !b.down && sub.subs[q.channel]
	if len(q.items) > 0 {
		b.scheduleLocked(k, q)
	} else {
		q.active = false
	}
	h := sub.h
	b.mu.Unlock()
	if ok {
		b.trace.add(b.s.Now(), "bp", fmt.Sprintf("%s -> %s %s %s", item.pub.owner, sub.owner, q.channel, describe(payload)))
		h.HandleMessage(sub.local(q.channel), payload)
	} else {
		b.trace.add(b.s.Now(), "bp", fmt.Sprintf("%s -> %s %s LOST (subscriber down or unsubscribed)", item.pub.owner, sub.owner, q.channel))
	}
}

// dropQueuesLocked forgets in-flight deliveries to owner (a dropped
// connection loses them, as Redis pub/sub does).
func (b *Bus) dropQueuesLocked(match func(q *fifo) bool) {
	for _, q := range b.queues {
		if match(q) && len(q.items) > 0 {
			b.trace.add(b.s.Now(), "fault", fmt.Sprintf("%d in-flight deliveries to %s on %s lost", len(q.items), q.sub.owner, q.channel))
			q.items = nil
		}
	}
}

// Subscribe implements backplane.Backplane. While unavailable it records
// the channel (restored on recovery, as go-redis does) and fails.
func (p *SimBackplane) Subscribe(_ context.Context, channels ...string) error {
	p.bus.mu.Lock()
	defer p.bus.mu.Unlock()
	if p.closed {
		return backplane.ErrClosed
	}
	for _, c := range channels {
		p.subs[p.wire(c)] = true
	}
	return p.unavailableLocked()
}

// Unsubscribe implements backplane.Backplane.
func (p *SimBackplane) Unsubscribe(_ context.Context, channels ...string) error {
	p.bus.mu.Lock()
	defer p.bus.mu.Unlock()
	if p.closed {
		return backplane.ErrClosed
	}
	for _, c := range channels {
		delete(p.subs, p.wire(c))
	}
	return nil
}

// Close implements backplane.Backplane.
func (p *SimBackplane) Close() error {
	p.bus.mu.Lock()
	defer p.bus.mu.Unlock()
	if p.closed {
		return backplane.ErrClosed
	}
	p.closed = true
	delete(p.bus.members, p.owner)
	p.bus.dropQueuesLocked(func(q *fifo) bool { return q.sub == p })
	return nil
}

func (p *SimBackplane) event(ev backplane.Event) {
	h := p.h
	if h == nil {
		return
	}
	p.bus.trace.add(p.bus.s.Now(), "fault", fmt.Sprintf("%s backplane event %s %s", p.owner, ev.Kind, strings.Join(ev.Channels, ",")))
	p.bus.s.add(&task{key: "bpev/" + p.owner, node: p.owner, label: "event " + p.owner + " " + ev.Kind.String(), run: func() { h.HandleEvent(ev) }}, 0)
}

// setHealth applies a partition/outage change and reports events to every
// node whose view changed.
func (b *Bus) setHealth(change func()) {
	b.mu.Lock()
	before := map[*SimBackplane]bool{}
	for _, p := range b.members {
		before[p] = p.unavailableLocked() != nil
	}
	change()
	owners := make([]string, 0, len(b.members))
	for o := range b.members {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	var evs []func()
	for _, o := range owners {
		p := b.members[o]
		now := p.unavailableLocked() != nil
		switch {
		case now && !before[p]:
			b.dropQueuesLocked(func(q *fifo) bool { return q.sub == p })
			p.wasDown = true
			evs = append(evs, func() { p.event(backplane.Event{Kind: backplane.EventDown, Err: p.unavailableLocked()}) })
		case !now && before[p]:
			chs := make([]string, 0, len(p.subs))
			for c := range p.subs {
				chs = append(chs, p.local(c))
			}
			sort.Strings(chs)
			evs = append(evs, func() {
				p.event(backplane.Event{Kind: backplane.EventGap, Channels: chs})
				p.event(backplane.Event{Kind: backplane.EventRestored})
			})
		}
	}
	for _, f := range evs {
		f()
	}
	b.mu.Unlock()
}

// describe summarizes a backplane payload for the trace.
func describe(payload []byte) string {
	env := &fabricv1.Envelope{}
	if err := proto.Unmarshal(payload, env); err != nil {
		return "(not an envelope)"
	}
	switch b := env.Body.(type) {
	case *fabricv1.Envelope_Invocation:
		s := describeRecord(b.Invocation.Json)
		if len(b.Invocation.ExcludedConnectionIds) > 0 {
			s += " except " + strings.Join(b.Invocation.ExcludedConnectionIds, ",")
		}
		return s
	case *fabricv1.Envelope_GroupCommand:
		return fmt.Sprintf("group-command #%d %s %s %s", b.GroupCommand.Id, b.GroupCommand.Action, b.GroupCommand.Group, b.GroupCommand.ConnectionId)
	case *fabricv1.Envelope_GroupAck:
		return fmt.Sprintf("group-ack #%d err=%q", b.GroupAck.Id, b.GroupAck.Error)
	}
	return "(empty envelope)"
}

// describeRecord renders a framed JSON record with the real parser.
func describeRecord(rec []byte) string {
	msgs, _, err := protocol.JSON.ParseMessages(rec, 1<<20)
	if err != nil || len(msgs) == 0 {
		return fmt.Sprintf("(unparsable %q)", rec)
	}
	return describeMessage(msgs[0])
}

func describeMessage(m protocol.Message) string {
	switch v := m.(type) {
	case *protocol.Invocation:
		return fmt.Sprintf("%s(%s)", v.Target, rawArgs(v.Arguments))
	case *protocol.Completion:
		switch {
		case v.Error != "":
			return fmt.Sprintf("completion #%s error %q", v.InvocationID, v.Error)
		case v.HasResult:
			return fmt.Sprintf("completion #%s result %s", v.InvocationID, rawArgs([]any{v.Result}))
		}
		return fmt.Sprintf("completion #%s", v.InvocationID)
	case *protocol.Close:
		return fmt.Sprintf("close error=%q reconnect=%v", v.Error, v.AllowReconnect)
	case *protocol.StreamItem:
		return fmt.Sprintf("stream-item #%s %s", v.InvocationID, rawArgs([]any{v.Item}))
	}
	return fmt.Sprintf("%T", m)
}

func rawArgs(args []any) string {
	parts := make([]string, len(args))
	for i, a := range args {
		if r, ok := a.(protocol.RawValue); ok {
			parts[i] = string(r)
		} else {
			parts[i] = fmt.Sprint(a)
		}
	}
	return strings.Join(parts, ",")
}
