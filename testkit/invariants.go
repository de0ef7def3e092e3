package testkit

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/hubfabric/hubfabric/backplane"
)

// checker keeps what the invariants of design.md need: every tagged send
// (sender, route, exclusions, when it was issued and how it completed),
// every connection's lifetime, every membership change, every fault and
// backplane event, and what each connection received. Times are scheduler
// steps, the cluster's logical clock.
type checker struct {
	c          *Cluster
	clock      uint64
	tags       int
	sends      []*sendRec
	byTag      map[string]*sendRec
	conns      []*connRec
	byConn     map[string]*connRec
	ops        map[string][]*memOp // conn|group
	faults     []uint64            // steps of faults (kill, partition, outage, drop)
	events     []uint64            // steps of backplane Down/Gap reports
	health     []healthEv
	settles    []uint64
	violations []string
}

type healthEv struct {
	step  uint64
	owner string
	down  bool
}

type sendRec struct {
	tag      string
	sender   *Client
	conn     string
	app      string
	kind     string
	name     string
	excluded []string
	issued   uint64
	call     *Call
}

type connRec struct {
	client    *Client
	id, user  string
	app       string
	connected uint64
	closed    uint64 // 0: open
	got       map[string][]uint64
	order     []string // tags in arrival order
}

type memOp struct {
	add  bool
	call *Call
}

func newChecker(c *Cluster) *checker {
	return &checker{c: c, byTag: map[string]*sendRec{}, byConn: map[string]*connRec{}, ops: map[string][]*memOp{}}
}

// now is the checker's logical clock: every recorded event gets the next
// tick, so events between two scheduler steps (a completion, then an
// invocation) keep their order.
func (k *checker) now() uint64 {
	k.clock++
	return k.clock
}

func (k *checker) fault() { k.faults = append(k.faults, k.now()) }

func (k *checker) settled() { k.settles = append(k.settles, k.now()) }

func (k *checker) backplaneEvent(owner string, ev backplane.Event) {
	if ev.Kind == backplane.EventDown || ev.Kind == backplane.EventGap {
		k.events = append(k.events, k.now())
	}
	if ev.Kind == backplane.EventDown || ev.Kind == backplane.EventRestored {
		k.health = append(k.health, healthEv{k.now(), owner, ev.Kind == backplane.EventDown})
	}
}

func (k *checker) connected(cl *Client) {
	r := &connRec{client: cl, id: cl.connID, user: cl.user, app: cl.node.prefix, connected: k.now(), got: map[string][]uint64{}}
	k.conns = append(k.conns, r)
	k.byConn[cl.connID] = r
}

func (k *checker) closed(cl *Client) {
	if r := k.byConn[cl.connID]; r != nil && r.closed == 0 {
		r.closed = max(k.now(), 1)
	}
}

func (k *checker) sent(cl *Client, call *Call, tag, kind, name string, excluded []string) {
	s := &sendRec{tag: tag, sender: cl, conn: cl.connID, app: cl.node.prefix, kind: kind, name: name, excluded: excluded, issued: call.issuedAt, call: call}
	k.sends = append(k.sends, s)
	k.byTag[tag] = s
}

func (k *checker) membership(conn, group string, add bool, call *Call) {
	key := conn + "|" + group
	k.ops[key] = append(k.ops[key], &memOp{add: add, call: call})
}

func (k *checker) received(cl *Client, r Received) {
	if r.Target != "msg" || len(r.Args) != 1 {
		return
	}
	tag, err := strconv.Unquote(r.Args[0])
	if err != nil {
		return
	}
	cr := k.byConn[r.ConnID]
	if cr == nil {
		return
	}
	cr.got[tag] = append(cr.got[tag], k.now())
	cr.order = append(cr.order, tag)
}

// member is the membership of conn in group at step at: 1 in, 0 out, -1
// unknown (a change in flight or failed).
func (k *checker) member(conn, group string, at uint64) int {
	state := 0
	var lastDone uint64
	for _, op := range k.ops[conn+"|"+group] {
		if op.call.issuedAt >= at {
			break
		}
		overlaps := op.call.issuedAt < lastDone
		lastDone = max(lastDone, op.call.doneAt)
		switch {
		case !op.call.Done || op.call.doneAt >= at:
			return -1 // in flight at the time
		case overlaps:
			state = -1 // concurrent with an earlier change: either order
		case op.call.Error != "":
			state = -1
		case op.add:
			state = 1
		default:
			state = 0
		}
	}
	return state
}

// addedBy reports whether an add of conn to group was issued before step.
func (k *checker) addIssuedBefore(conn, group string, from, to uint64) bool {
	for _, op := range k.ops[conn+"|"+group] {
		if op.add && op.call.issuedAt >= from && op.call.issuedAt <= to {
			return true
		}
	}
	return false
}

// opIssued reports whether a membership change of conn in group was issued
// in [from, to].
func (k *checker) opIssued(conn, group string, from, to uint64) bool {
	for _, op := range k.ops[conn+"|"+group] {
		if op.call.issuedAt >= from && op.call.issuedAt <= to {
			return true
		}
	}
	return false
}

func (k *checker) nextSettle(after uint64) uint64 {
	for _, s := range k.settles {
		if s > after {
			return s
		}
	}
	return ^uint64(0)
}

// downAt reports whether some node had reported EventDown, and not yet
// EventRestored, at step.
func (k *checker) downAt(step uint64) bool {
	state := map[string]bool{}
	for _, h := range k.health {
		if h.step > step {
			break
		}
		state[h.owner] = h.down
	}
	for _, d := range state {
		if d {
			return true
		}
	}
	return false
}

func within(steps []uint64, from, to uint64) bool {
	for _, s := range steps {
		if s >= from && s <= to {
			return true
		}
	}
	return false
}

func (k *checker) add(format string, args ...any) {
	k.violations = append(k.violations, fmt.Sprintf(format, args...))
}

// check evaluates every invariant over what was recorded.
func (k *checker) check() []string {
	for _, r := range k.conns {
		// 1. No duplicates.
		for tag, steps := range r.got {
			if len(steps) > 1 {
				k.add("duplicate: %s received %s %d times", r.id, tag, len(steps))
			}
			if k.byTag[tag] == nil {
				k.add("unknown: %s received %s, which nobody sent", r.id, tag)
			}
		}
		// 2. Order per sender connection and route.
		last := map[string]int{}
		for _, tag := range r.order {
			s := k.byTag[tag]
			if s == nil {
				continue
			}
			route := s.conn + " " + s.kind + ":" + s.name
			i := slices.Index(k.sends, s)
			if prev, ok := last[route]; ok && i < prev {
				k.add("order: %s received %s after %s (same sender %s and route %s:%s)", r.id, tag, k.sends[prev].tag, s.conn, s.kind, s.name)
			}
			last[route] = i
		}
	}
	for _, s := range k.sends {
		k.checkSend(s)
	}
	return k.violations
}

func (k *checker) checkSend(s *sendRec) {
	end := k.nextSettle(s.issued)
	for _, r := range k.conns {
		steps := r.got[s.tag]
		got := len(steps) > 0
		// 4. Isolation.
		if got && r.app != s.app {
			k.add("isolation: %s (app %s) received %s from app %s", r.id, r.app, s.tag, s.app)
			continue
		}
		if r.app != s.app {
			continue
		}
		// 3. Targeting: exclusions and route.
		if got && slices.Contains(s.excluded, r.id) {
			k.add("exclusion: %s received %s although excluded", r.id, s.tag)
			continue
		}
		target := false
		switch s.kind {
		case "all":
			target = !slices.Contains(s.excluded, r.id)
		case "conn":
			target = r.id == s.name
		case "user":
			target = r.user == s.name
		case "group":
			if slices.Contains(s.excluded, r.id) {
				break
			}
			m := k.member(r.id, s.name, s.issued)
			if got && m == 0 && !k.addIssuedBefore(r.id, s.name, s.issued, steps[0]) {
				k.add("membership: %s received %s sent to group %s while not a member (left or never joined before the send)", r.id, s.tag, s.name)
			}
			// A member that leaves while the message is on its way may miss
			// it: completeness holds only for members that stay.
			target = m == 1 && !k.opIssued(r.id, s.name, s.issued, end)
		}
		if got && !target && s.kind != "group" {
			k.add("targeting: %s received %s meant for %s:%s", r.id, s.tag, s.kind, s.name)
		}
		if !target || got || r.connected >= s.issued {
			continue
		}
		if r.closed != 0 && r.closed <= end {
			continue // the recipient went away: it was told (Close) or its socket dropped
		}
		// 5. Failure is loud.
		if s.call.Done && s.call.Error != "" {
			continue // reported to the sender
		}
		if within(k.events, s.issued, end) || k.downAt(s.issued) {
			continue // a backplane Down/Gap was reported and counted
		}
		if sr := k.byConn[s.conn]; !s.call.Done && sr != nil && sr.closed != 0 {
			continue // the sender's connection ended before the call ran: it is gone, with its calls
		}
		if within(k.faults, s.issued, end) && !s.call.Done {
			continue // the sender's node died before answering
		}
		k.add("lost: %s did not receive %s (%s:%s from %s), with no error to the sender and no backplane event", r.id, s.tag, s.kind, s.name, s.conn)
	}
}

// Summary counts what the checker saw, for reports.
func (k *checker) Summary() string {
	n := 0
	for _, r := range k.conns {
		n += len(r.order)
	}
	return fmt.Sprintf("%d sends, %d connections, %d deliveries, %d faults, %d backplane events", len(k.sends), len(k.conns), n, len(k.faults), len(k.events))
}
