package testkit

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/internal/seam"
)

// Epoch is the virtual clock's time zero.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// watchdog bounds the real time a simulated goroutine may run before it
// parks or ends: longer means it blocked outside the simulation.
const watchdog = 20 * time.Second

// stepCost is the virtual time one task takes.
const stepCost = 10 * time.Microsecond

// errNodeKilled is what a wait of a killed node returns.
var errNodeKilled = errors.New("testkit: node killed")

// errClosed is what waits return once the scheduler is closed.
var errClosed = errors.New("testkit: simulation closed")

// task is one unit of work: a mailbox run, a timer, a goroutine resumption
// or a backplane delivery.
type task struct {
	key     string // canonical order among tasks created in one step
	node    string // owning node; its tasks are dropped once it is killed
	label   string
	due     time.Duration
	seq     uint64
	run     func()
	stopped bool
	fired   bool
	// background timers (keep-alive pings, client timeouts) run as time
	// passes but do not keep Settle going: it ends when only they remain.
	background bool
}

// delivery is a frame written to a simulated client's pipe, committed in
// client order at the end of the step.
type delivery struct {
	client *Client
	pipe   *pipe
	frame  []byte
	seq    uint64
}

// Scheduler runs everything in a simulation one task at a time, picking the
// next runnable task with a seeded RNG and advancing a virtual clock only
// when nothing is runnable.
type Scheduler struct {
	mu       sync.Mutex
	rng      *rand.Rand
	now      time.Duration
	seq      uint64
	runnable []*task
	timers   []*task
	fresh    []*task
	dead     map[string]bool
	closed   bool
	steps    uint64
	deliv    []delivery
	gid      int
	parked   map[*simG]bool

	cur     *simG         // the simulated goroutine holding the baton
	yieldCh chan struct{} // a simulated goroutine parked or ended

	trace    *Trace
	stepHook func() // called after every step (invariant bookkeeping)
	fatal    func(msg string)
}

// newScheduler returns a scheduler seeded with seed.
func newScheduler(seed uint64, tr *Trace) *Scheduler {
	return &Scheduler{
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		dead:    map[string]bool{},
		parked:  map[*simG]bool{},
		yieldCh: make(chan struct{}),
		trace:   tr,
		fatal:   func(msg string) { panic(msg) },
	}
}

// Now is the virtual time since Epoch.
func (s *Scheduler) Now() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// Steps is how many tasks ran.
func (s *Scheduler) Steps() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.steps
}

// Intn draws from the simulation's RNG (for fault choices).
func (s *Scheduler) Intn(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		return 0
	}
	return s.rng.IntN(n)
}

func (s *Scheduler) add(t *task, delay time.Duration) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addLocked(t, delay)
}

func (s *Scheduler) addLocked(t *task, delay time.Duration) *task {
	if s.closed {
		t.stopped = true
		return t
	}
	s.seq++
	t.seq = s.seq
	if delay > 0 {
		t.due = s.now + delay
		i, _ := slices.BinarySearchFunc(s.timers, t, cmpTimer)
		s.timers = slices.Insert(s.timers, i, t)
		return t
	}
	t.due = s.now
	s.fresh = append(s.fresh, t)
	return t
}

func cmpTimer(a, b *task) int {
	if c := cmp.Compare(a.due, b.due); c != 0 {
		return c
	}
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// settleFresh moves the tasks created in the last step to the run queue in
// canonical (key) order, so Go map iteration in actors cannot change it.
func (s *Scheduler) settleFreshLocked() {
	if len(s.fresh) == 0 {
		return
	}
	slices.SortStableFunc(s.fresh, func(a, b *task) int { return cmp.Compare(a.key, b.key) })
	s.runnable = append(s.runnable, s.fresh...)
	s.fresh = s.fresh[:0]
}

// Pending reports whether any task is runnable or timed (background
// timers aside).
func (s *Scheduler) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.runnable)+len(s.fresh) > 0 || s.liveTimersLocked() > 0
}

// liveTimersLocked counts the live timers that are not background ones.
func (s *Scheduler) liveTimersLocked() int {
	n := 0
	for _, t := range s.timers {
		if !t.stopped && !s.dead[t.node] && !t.background {
			n++
		}
	}
	return n
}

// Step runs one task; false when nothing is left. limit, if positive, is
// the virtual time past which timers are not fired.
func (s *Scheduler) Step(limit time.Duration) bool {
	s.mu.Lock()
	s.settleFreshLocked()
	for len(s.runnable) == 0 {
		// Advance the clock to the next live timer.
		for len(s.timers) > 0 && (s.timers[0].stopped || s.dead[s.timers[0].node]) {
			s.timers = s.timers[1:]
		}
		if len(s.timers) == 0 || (limit > 0 && s.timers[0].due > limit) || (limit <= 0 && s.liveTimersLocked() == 0) {
			if limit > 0 && s.now < limit {
				s.now = limit
			}
			s.mu.Unlock()
			return false
		}
		t := s.timers[0]
		s.timers = s.timers[1:]
		if t.due > s.now {
			s.now = t.due
		}
		t.fired = true
		s.runnable = append(s.runnable, t)
	}
	// Timers that came due while tasks ran join the run queue.
	for len(s.timers) > 0 && s.timers[0].due <= s.now {
		t := s.timers[0]
		s.timers = s.timers[1:]
		if !t.stopped && !s.dead[t.node] {
			s.runnable = append(s.runnable, t)
		}
	}
	i := s.rng.IntN(len(s.runnable))
	t := s.runnable[i]
	s.runnable = slices.Delete(s.runnable, i, i+1)
	if t.stopped || s.dead[t.node] {
		s.mu.Unlock()
		return true
	}
	t.fired = true
	s.steps++
	s.now += stepCost
	now := s.now
	s.mu.Unlock()
	if t.label != "" {
		s.trace.add(now, "step", t.label)
	}
	t.run()
	s.mu.Lock()
	d := s.deliv
	s.deliv = nil
	s.mu.Unlock()
	slices.SortStableFunc(d, func(a, b delivery) int { return cmp.Compare(a.client.name, b.client.name) })
	for _, x := range d {
		x.client.commit(now, x.pipe, x.frame)
	}
	if s.stepHook != nil {
		s.stepHook()
	}
	return true
}

// RunUntil runs tasks until cond holds or nothing is left; it reports cond.
func (s *Scheduler) RunUntil(cond func() bool, maxSteps int) bool {
	for i := 0; !cond(); i++ {
		if i >= maxSteps {
			s.fatal(fmt.Sprintf("testkit: no progress after %d steps", maxSteps))
			return false
		}
		if !s.Step(0) {
			return cond()
		}
	}
	return true
}

// enqueueDelivery buffers a frame for c until the end of the step.
func (s *Scheduler) enqueueDelivery(c *Client, p *pipe, frame []byte) {
	s.mu.Lock()
	s.seq++
	s.deliv = append(s.deliv, delivery{client: c, pipe: p, frame: frame, seq: s.seq})
	s.mu.Unlock()
}

// sleep parks the calling simulated goroutine for d of virtual time (a
// slow client's socket write). It returns an error when the goroutine's
// node is killed or the simulation ends meanwhile.
func (s *Scheduler) sleep(d time.Duration) error {
	g := s.current()
	if g == nil {
		panic("testkit: sleep outside a simulated goroutine")
	}
	s.add(&task{key: fmt.Sprintf("g/%08d", g.id), node: g.node, label: "wake " + g.label, run: func() { s.resume(g, nil) }}, d)
	return s.park(g)
}

// kill drops every task of node from now on and wakes its parked
// goroutines with errNodeKilled.
func (s *Scheduler) kill(node string) {
	s.mu.Lock()
	s.dead[node] = true
	var wake []*simG
	for g := range s.parked {
		if g.node == node {
			wake = append(wake, g)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(wake, func(a, b *simG) int { return cmp.Compare(a.id, b.id) })
	for _, g := range wake {
		g := g
		// Resumed outside the node (its tasks are dropped) so the goroutine
		// can unwind.
		s.add(&task{key: fmt.Sprintf("g/%08d", g.id), label: "unwind " + g.label, run: func() { s.resume(g, errNodeKilled) }}, 0)
	}
}

// revive lets node's tasks run again (a restarted node reuses its id).
func (s *Scheduler) revive(node string) {
	s.mu.Lock()
	delete(s.dead, node)
	s.mu.Unlock()
}

// close ends the simulation: every parked goroutine is released with
// errClosed and runs on freely; new tasks are dropped.
func (s *Scheduler) close() {
	s.mu.Lock()
	s.closed = true
	var wake []*simG
	for g := range s.parked {
		wake = append(wake, g)
	}
	s.parked = map[*simG]bool{}
	s.runnable, s.timers, s.fresh = nil, nil, nil
	s.mu.Unlock()
	for _, g := range wake {
		g.resumeCh <- errClosed
	}
}

// --- simulated goroutines -------------------------------------------------

// simG is a goroutine run under the scheduler's baton: it runs only while
// the driver waits for it, and gives the baton back when it parks in a
// simulated wait or ends.
type simG struct {
	id       int
	node     string
	label    string
	resumeCh chan error
}

func (s *Scheduler) goroutine(node, label string, fn func()) {
	s.mu.Lock()
	s.gid++
	g := &simG{id: s.gid, node: node, label: fmt.Sprintf("%s/g%d %s", node, s.gid, label), resumeCh: make(chan error)}
	s.mu.Unlock()
	s.add(&task{key: fmt.Sprintf("g/%08d", g.id), node: node, label: "start " + g.label, run: func() {
		go func() {
			<-g.resumeCh
			defer func() {
				if r := recover(); r != nil {
					s.trace.add(s.Now(), "panic", fmt.Sprintf("%s: %v", g.label, r))
				}
				s.mu.Lock()
				closed := s.closed
				s.mu.Unlock()
				if !closed {
					s.yieldCh <- struct{}{}
				}
			}()
			fn()
		}()
		s.resume(g, nil)
	}}, 0)
}

// resume hands the baton to g and waits until it parks or ends.
func (s *Scheduler) resume(g *simG, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	delete(s.parked, g)
	s.cur = g
	s.mu.Unlock()
	g.resumeCh <- err
	t := time.NewTimer(watchdog)
	select {
	case <-s.yieldCh:
		t.Stop()
	case <-t.C:
		s.fatal(fmt.Sprintf("testkit: goroutine %s blocked for %s outside the simulation (a hub method waiting on its own channel or lock?)", g.label, watchdog))
	}
	s.mu.Lock()
	s.cur = nil
	s.mu.Unlock()
}

// park gives the baton back and waits to be resumed; the caller must have
// arranged a resumption (a reply, a timer).
func (s *Scheduler) park(g *simG) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	s.parked[g] = true
	s.mu.Unlock()
	s.yieldCh <- struct{}{}
	return <-g.resumeCh
}

func (s *Scheduler) current() *simG {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// --- the Runtime of one node ----------------------------------------------

// nodeRuntime is the seam.Runtime of one simulated node.
type nodeRuntime struct {
	s    *Scheduler
	node string
}

var _ seam.Runtime = (*nodeRuntime)(nil)

func (r *nodeRuntime) Go(fn func()) { r.s.goroutine(r.node, "", fn) }

func (r *nodeRuntime) Now() time.Time { return Epoch.Add(r.s.Now()) }

func (r *nodeRuntime) Join(*sync.WaitGroup) {}

// simTimer is a seam.Timer on the virtual clock.
type simTimer struct {
	s    *Scheduler
	node string
	fn   func()
	t    *task
}

func (t *simTimer) arm(d time.Duration) {
	if d <= 0 {
		d = 1
	}
	t.t = t.s.add(&task{key: "t/" + t.node, node: t.node, label: fmt.Sprintf("%s timer %s", t.node, d), run: t.fn}, d)
}

// Stop implements seam.Timer.
func (t *simTimer) Stop() bool {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if t.t.stopped || t.t.fired {
		return false
	}
	t.t.stopped = true
	return true
}

// Reset implements seam.Timer.
func (t *simTimer) Reset(d time.Duration) bool {
	active := t.Stop()
	t.arm(d)
	return active
}

func (r *nodeRuntime) AfterFunc(d time.Duration, fn func()) seam.Timer {
	t := &simTimer{s: r.s, node: r.node, fn: fn}
	t.arm(d)
	return t
}

// Request sends msg with a reply address served by a waiter (no
// protoactor future: their timeouts use the real clock).
func (r *nodeRuntime) Request(root *actor.RootContext, pid *actor.PID, msg any, timeout time.Duration) seam.Awaiter {
	w := &waiter{s: r.s, node: r.node, sys: root.ActorSystem()}
	reg := root.ActorSystem().ProcessRegistry
	w.pid, _ = reg.Add(w, "sim-req"+reg.NextId())
	w.timer = r.AfterFunc(timeout, func() {
		w.complete(nil, fmt.Errorf("testkit: no answer within %s (virtual): %w", timeout, actor.ErrTimeout))
	})
	root.RequestWithCustomSender(pid, msg, w.pid)
	return w
}

// waiter receives one reply, like a protoactor future, and resumes the
// simulated goroutine waiting for it.
type waiter struct {
	s     *Scheduler
	node  string
	sys   *actor.ActorSystem
	pid   *actor.PID
	timer seam.Timer

	mu     sync.Mutex
	done   bool
	result any
	err    error
	g      *simG
}

func (w *waiter) SendUserMessage(_ *actor.PID, m any) {
	_, msg, _ := actor.UnwrapEnvelope(m)
	w.complete(msg, nil)
}

func (w *waiter) SendSystemMessage(*actor.PID, any) {}

func (w *waiter) Stop(*actor.PID) {}

func (w *waiter) complete(res any, err error) {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.done, w.result, w.err = true, res, err
	g := w.g
	w.mu.Unlock()
	w.timer.Stop()
	w.sys.ProcessRegistry.Remove(w.pid)
	if g != nil {
		w.s.add(&task{key: fmt.Sprintf("g/%08d", g.id), node: w.node, label: "resume " + g.label, run: func() { w.s.resume(g, nil) }}, 0)
	}
}

// Result implements seam.Awaiter: a simulated goroutine parks; the
// driver (a test calling into a node) runs the simulation until the answer
// is there.
func (w *waiter) Result() (any, error) {
	w.mu.Lock()
	if w.done {
		defer w.mu.Unlock()
		return w.result, w.err
	}
	w.mu.Unlock()
	s := w.s
	s.mu.Lock()
	closed, dead := s.closed, s.dead[w.node]
	s.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	if dead {
		return nil, errNodeKilled
	}
	if g := s.current(); g != nil {
		w.mu.Lock()
		w.g = g
		w.mu.Unlock()
		if err := s.park(g); err != nil {
			return nil, err
		}
	} else {
		s.RunUntil(func() bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.done
		}, 10_000_000)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		return nil, errors.New("testkit: simulation ended before the answer")
	}
	return w.result, w.err
}

// --- dispatcher -----------------------------------------------------------

// dispatcher queues mailbox runs as scheduler tasks. Each Props gets its
// own, with a deterministic id, so tasks order canonically.
type dispatcher struct {
	s     *Scheduler
	node  string
	key   string
	label string
}

func (d *dispatcher) Schedule(fn func()) {
	d.s.add(&task{key: d.key, node: d.node, label: d.label, run: fn}, 0)
}

func (d *dispatcher) Throughput() int { return 300 }

// propsFactory returns the PropsFactory of node: every actor runs on a
// dispatcher of the scheduler, its own, made when it is spawned (one Props
// may spawn many actors: a hub's connections share theirs).
func (s *Scheduler) propsFactory(node string) seam.Props {
	return func(producer actor.Producer) *actor.Props {
		return actor.PropsFromProducer(producer, actor.WithSpawnFunc(func(sys *actor.ActorSystem, id string, p *actor.Props, parent actor.SpawnerContext) (*actor.PID, error) {
			s.mu.Lock()
			s.gid++
			n := s.gid
			s.mu.Unlock()
			d := &dispatcher{s: s, node: node, key: fmt.Sprintf("a/%s/%08d", node, n), label: fmt.Sprintf("%s/%s#%d", node, actorKind(id), n)}
			return actor.DefaultSpawner(sys, id, p.Clone(actor.WithDispatcher(d), actor.WithSpawnFunc(actor.DefaultSpawner)), parent)
		}))
	}
}

// actorKind names the kind of a hubfabric actor from its id (as
// actors.SpawnNode and the hub name them), for trace labels.
func actorKind(id string) string {
	parent, child, nested := strings.Cut(id, "/")
	switch {
	case nested && strings.HasPrefix(child, "c-"):
		return "connection"
	case nested && strings.HasPrefix(child, "$"):
		return "group"
	case strings.HasPrefix(parent, "hubfabric-hub-"):
		return "hub"
	case strings.HasPrefix(parent, "hubfabric-bridge-"):
		return "bridge"
	}
	return "actor"
}
