package actors

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/seam"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// waitTimeout bounds every wait of these tests. It is a deadline for a
// test that is already failing, never a pause: waits return as soon as
// what they wait for has happened.
const waitTimeout = 5 * time.Second

// watched is state guarded by mu that a test goroutine can wait on without
// sleeping: every change goes through update, which wakes the waiters.
type watched struct {
	mu      sync.Mutex
	changed chan struct{} // closed and dropped by update; nil: nobody waits
}

// update runs f under the lock and wakes every waitUntil.
func (w *watched) update(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f()
	if w.changed != nil {
		close(w.changed)
		w.changed = nil
	}
}

// read runs f under the lock.
func (w *watched) read(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f()
}

// waitUntil waits until cond (called under the lock) holds, re-checking it
// after every update; it fails the test if that takes longer than
// waitTimeout. Call it on the test's goroutine.
func (w *watched) waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		if cond() {
			w.mu.Unlock()
			return
		}
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
	}
}

// closeCall is one Outlet.Close.
type closeCall struct {
	msg            string
	allowReconnect bool
}

// fakeOutlet is a fabric.Outlet that records what the actors hand it:
// enqueued records (deliveries of sends), sent messages (replies of calls)
// and Close calls. Safe for concurrent use.
type fakeOutlet struct {
	watched
	id           string
	protocol     protocol.HubProtocol
	records      [][]byte
	sent         []protocol.Message
	closes       []closeCall
	entered      int           // Enqueue calls begun
	gate         chan struct{} // if set, Enqueue waits for it to close
	panicOn      string        // if set, Enqueue panics on the Completion of this invocation id
	panicOnClose bool          // Close panics (after recording the call)
}

func newOutlet(id string, p protocol.HubProtocol) *fakeOutlet {
	return &fakeOutlet{id: id, protocol: p}
}

func (o *fakeOutlet) ID() string                     { return o.id }
func (o *fakeOutlet) Done() <-chan struct{}          { return nil }
func (o *fakeOutlet) Protocol() protocol.HubProtocol { return o.protocol }

func (o *fakeOutlet) Enqueue(record []byte) error {
	if m := o.reply(record); m != nil {
		if c, ok := m.(*protocol.Completion); ok && o.panicOn != "" && c.InvocationID == o.panicOn {
			panic("fakeOutlet: Enqueue of the Completion of " + o.panicOn)
		}
		// A call's reply, encoded by the call: kept as a sent message.
		o.update(func() { o.sent = append(o.sent, m) })
		return nil
	}
	var gate chan struct{}
	o.update(func() { o.entered, gate = o.entered+1, o.gate })
	if gate != nil {
		<-gate
	}
	o.update(func() { o.records = append(o.records, record) })
	return nil
}

// reply parses record and returns it when it is a call's reply (a
// Completion or StreamItem) rather than a delivery.
func (o *fakeOutlet) reply(record []byte) protocol.Message {
	msgs, _, err := o.protocol.ParseMessages(record, 1<<20)
	if err != nil || len(msgs) != 1 {
		return nil
	}
	switch m := msgs[0].(type) {
	case *protocol.Completion, *protocol.StreamItem:
		return m
	}
	return nil
}

// blockEnqueue makes Enqueue wait, holding up the actor that delivers,
// until release is called (also on cleanup, ahead of the node's stop when
// called after startNode).
func (o *fakeOutlet) blockEnqueue(t testing.TB) (release func()) {
	gate := make(chan struct{})
	o.update(func() { o.gate = gate })
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return release
}

// waitEntered waits until n Enqueue calls have begun.
func (o *fakeOutlet) waitEntered(t testing.TB, n int) {
	t.Helper()
	o.waitUntil(t, o.id+" to be entered "+strconv.Itoa(n)+" time(s)", func() bool { return o.entered >= n })
}

func (o *fakeOutlet) Send(m protocol.Message) error {
	o.update(func() { o.sent = append(o.sent, m) })
	return nil
}

func (o *fakeOutlet) Close(errMsg string, allowReconnect bool) {
	o.update(func() { o.closes = append(o.closes, closeCall{errMsg, allowReconnect}) })
	if o.panicOnClose {
		panic("fakeOutlet: Close")
	}
}

// recordsNow returns a copy of the records enqueued so far.
func (o *fakeOutlet) recordsNow() [][]byte {
	var out [][]byte
	o.read(func() { out = slices.Clone(o.records) })
	return out
}

// waitRecords waits until at least n records were enqueued and returns them
// all.
func (o *fakeOutlet) waitRecords(t testing.TB, n int) [][]byte {
	t.Helper()
	o.waitUntil(t, o.id+" to have "+strconv.Itoa(n)+" record(s)", func() bool { return len(o.records) >= n })
	return o.recordsNow()
}

// sentNow returns a copy of the messages sent so far.
func (o *fakeOutlet) sentNow() []protocol.Message {
	var out []protocol.Message
	o.read(func() { out = slices.Clone(o.sent) })
	return out
}

// waitSent waits until at least n messages were sent and returns them all.
func (o *fakeOutlet) waitSent(t testing.TB, n int) []protocol.Message {
	t.Helper()
	o.waitUntil(t, o.id+" to have "+strconv.Itoa(n)+" sent message(s)", func() bool { return len(o.sent) >= n })
	return o.sentNow()
}

// waitClose waits for the first Close and returns it.
func (o *fakeOutlet) waitClose(t testing.TB) closeCall {
	t.Helper()
	var c closeCall
	o.waitUntil(t, o.id+" to be closed", func() bool {
		if len(o.closes) == 0 {
			return false
		}
		c = o.closes[0]
		return true
	})
	return c
}

// fakeInvoker is a fabric.Invoker. Connected returns nil. Invoke runs
// invoke if set; otherwise it answers a Completion with the invocation's
// id through call.Reply and calls call.Done. It records the targets of the
// calls in the order they started, how many ran at once at most, and each
// Disconnected.
type fakeInvoker struct {
	watched
	invoke func(ctx context.Context, call *fabric.Call)

	started      []string // invocation ids, in start order
	active       int      // calls inside Invoke now
	maxActive    int
	disconnected []error // one per Disconnected call
	connects     int     // Connected calls
}

func (f *fakeInvoker) Connected(context.Context, *fabric.ConnectionInfo) error {
	f.update(func() { f.connects++ })
	return nil
}

func (f *fakeInvoker) Invoke(ctx context.Context, _ *fabric.ConnectionInfo, call *fabric.Call) {
	id, _ := fabric.InvocationOf(call.Message)
	f.update(func() {
		f.started = append(f.started, id)
		f.active++
		f.maxActive = max(f.maxActive, f.active)
	})
	if f.invoke != nil {
		f.invoke(ctx, call)
	} else {
		call.Reply(&protocol.Completion{InvocationID: id})
	}
	// Leave before Done: Done frees the slot for the next call.
	f.update(func() { f.active-- })
	call.Done()
}

func (f *fakeInvoker) Disconnected(_ context.Context, _ *fabric.ConnectionInfo, err error) {
	f.update(func() { f.disconnected = append(f.disconnected, err) })
}

// disconnects is how many times Disconnected ran.
func (f *fakeInvoker) disconnects() int {
	var n int
	f.read(func() { n = len(f.disconnected) })
	return n
}

// countingRuntime is the real runtime, counting the goroutines the actors
// start; the count moves on the actor's own goroutine, at the moment it
// decides to start one.
type countingRuntime struct {
	seam.Real
	goes atomic.Int64
}

func (r *countingRuntime) Go(fn func()) {
	r.goes.Add(1)
	go fn()
}

// spyBackplane is a Memory that records the channels subscribed and
// unsubscribed (once the Memory did it), and can hold a Subscribe of a
// channel until the test releases it. It keeps Memory's Audience.
type spyBackplane struct {
	*backplane.Memory
	watched
	subscribed   []string
	unsubscribed []string
	holding      []string                 // Subscribe calls of held channels, waiting
	hold         map[string]chan struct{} // channel -> closed to let its Subscribe go on
}

func newSpy(m *backplane.Memory) *spyBackplane {
	return &spyBackplane{Memory: m, hold: map[string]chan struct{}{}}
}

// holdSubscribe makes Subscribe calls naming ch wait until the returned
// function is called (also called on cleanup).
func (s *spyBackplane) holdSubscribe(t testing.TB, ch string) (release func()) {
	gate := make(chan struct{})
	s.update(func() { s.hold[ch] = gate })
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return release
}

func (s *spyBackplane) Subscribe(ctx context.Context, channels ...string) error {
	for _, ch := range channels {
		var gate chan struct{}
		s.read(func() { gate = s.hold[ch] })
		if gate == nil {
			continue
		}
		s.update(func() { s.holding = append(s.holding, ch) })
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := s.Memory.Subscribe(ctx, channels...)
	if err == nil {
		s.update(func() { s.subscribed = append(s.subscribed, channels...) })
	}
	return err
}

func (s *spyBackplane) Unsubscribe(ctx context.Context, channels ...string) error {
	err := s.Memory.Unsubscribe(ctx, channels...)
	if err == nil {
		s.update(func() { s.unsubscribed = append(s.unsubscribed, channels...) })
	}
	return err
}

// waitUnsubscribed waits until ch was unsubscribed. For a connection's
// channel this means its hub actor has handled the connection actor's
// Terminated (it asks the bridge to unsubscribe from there).
func (s *spyBackplane) waitUnsubscribed(t testing.TB, ch string) {
	t.Helper()
	s.waitUntil(t, "unsubscribe of "+ch, func() bool { return slices.Contains(s.unsubscribed, ch) })
}

// waitHolding waits until a Subscribe of ch is held.
func (s *spyBackplane) waitHolding(t testing.TB, ch string) {
	t.Helper()
	s.waitUntil(t, "a held subscribe of "+ch, func() bool { return slices.Contains(s.holding, ch) })
}

// blindBackplane hides the Audience of the backplane it wraps, as Redis
// would: the bridge must assume another node may listen anywhere.
type blindBackplane struct{ backplane.Backplane }

// probe is an actor that puts every user message it gets on a channel, so
// a test can see in which order an actor answered several requests made
// with the probe as sender.
type probe struct {
	pid *actor.PID
	ch  chan any
}

func newProbe(t testing.TB, root *actor.RootContext) *probe {
	p := &probe{ch: make(chan any, 64)}
	p.pid = root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch c.Message().(type) {
		case actor.SystemMessage, actor.AutoReceiveMessage:
			return
		}
		p.ch <- c.Message()
	}))
	t.Cleanup(func() { _ = root.StopFuture(p.pid).Wait() })
	return p
}

// next waits for the probe's next message.
func (p *probe) next(t testing.TB) any {
	t.Helper()
	select {
	case m := <-p.ch:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("timed out after %s waiting for a message to the probe", waitTimeout)
		return nil
	}
}

// newTestSystem returns an actor system that logs nothing and whose dead
// letter throttle goroutine ends within a millisecond (goleak). It is shut
// down on cleanup, after the nodes started later are stopped.
func newTestSystem(t testing.TB) *actor.ActorSystem {
	sys := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		actor.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	t.Cleanup(sys.Shutdown)
	return sys
}

// nodeConfig returns a fully populated configuration of node id on bp.
func nodeConfig(id string, bp backplane.Backplane) *fabric.NodeConfig {
	return &fabric.NodeConfig{
		NodeID:                    id,
		Hubs:                      []string{"chat"},
		Backplane:                 bp,
		BackplaneTimeout:          5 * time.Second,
		GroupAckTimeout:           2 * time.Second,
		MaxBatch:                  512,
		MaxParallelInvocations:    1,
		StreamBufferCapacity:      10,
		MaxPendingInvocations:     128,
		MaxPendingInvocationBytes: 1 << 20,
		MaxStreamsPerConnection:   100,
		MaxGroupsPerConnection:    1000,
		MaxGroupNameBytes:         1024,
		Seams:                     seam.Seams{}.OrReal(),
		Logger:                    slog.New(slog.DiscardHandler),
		Counters:                  &fabric.Counters{},
	}
}

// testNode is one node's actor tree with its backplane started, as
// hub.Node.Start leaves it.
type testNode struct {
	t     testing.TB
	root  *actor.RootContext
	cfg   *fabric.NodeConfig
	tree  *fabric.Tree
	hub   *actor.PID // the "chat" hub
	conns []*testConn
}

// testConn is a connection attached to a node's hub.
type testConn struct {
	id     string
	out    *fakeOutlet
	inv    *fakeInvoker
	in     *fabric.Inbound
	closed bool
}

// close ends the connection as its socket would (Inbound.Closed), once.
// The connection actor then runs Disconnected and stops.
func (c *testConn) close() {
	if !c.closed {
		c.closed = true
		c.in.Closed(nil)
	}
}

// startNode spawns node id on bp (SpawnNode), starts the backplane and
// subscribes the tree's channels. On cleanup it ends the connections still
// open, waits until the hub has none, poisons the hub and the bridge (the
// bridge joins its workers when it stops) and closes the backplane.
// configure, if set, changes the configuration before the spawn.
func startNode(t testing.TB, sys *actor.ActorSystem, id string, bp backplane.Backplane, configure func(*fabric.NodeConfig)) *testNode {
	t.Helper()
	cfg := nodeConfig(id, bp)
	if configure != nil {
		configure(cfg)
	}
	tree, err := SpawnNode(sys.Root, cfg)
	if err != nil {
		t.Fatalf("SpawnNode: %v", err)
	}
	n := &testNode{t: t, root: sys.Root, cfg: cfg, tree: tree, hub: tree.Hubs["chat"]}
	t.Cleanup(n.stop)
	ctx := context.Background()
	if err := bp.Start(ctx, tree.Handler); err != nil {
		t.Fatalf("start backplane: %v", err)
	}
	if err := bp.Subscribe(ctx, tree.Channels...); err != nil {
		t.Fatalf("subscribe %v: %v", tree.Channels, err)
	}
	return n
}

func (n *testNode) stop() {
	for _, c := range n.conns {
		c.close()
	}
	for name, pid := range n.tree.Hubs {
		if _, err := n.root.RequestFuture(pid, &fabric.WaitNoConnections{}, waitTimeout).Result(); err != nil {
			n.t.Errorf("node %s: wait for the connections of hub %s to end: %v", n.cfg.NodeID, name, err)
		}
		if err := n.root.PoisonFuture(pid).Wait(); err != nil {
			n.t.Errorf("node %s: stop hub %s: %v", n.cfg.NodeID, name, err)
		}
	}
	if err := n.root.PoisonFuture(n.tree.Bridge).Wait(); err != nil {
		n.t.Errorf("node %s: stop bridge: %v", n.cfg.NodeID, err)
	}
	_ = n.cfg.Backplane.Close()
}

// request asks pid and waits for the answer.
func (n *testNode) request(pid *actor.PID, msg any) any {
	n.t.Helper()
	res, err := n.root.RequestFuture(pid, msg, waitTimeout).Result()
	if err != nil {
		n.t.Fatalf("request %T: %v", msg, err)
	}
	return res
}

// connect attaches connection id of user (may be empty) speaking p, with a
// default fakeInvoker, and waits for the hub's answer (given once the
// connection's channels are subscribed).
func (n *testNode) connect(id, user string, p protocol.HubProtocol) *testConn {
	n.t.Helper()
	return n.connectWith(id, user, newOutlet(id, p), &fakeInvoker{})
}

// connectWith is connect with the given outlet and invoker.
func (n *testNode) connectWith(id, user string, out *fakeOutlet, inv *fakeInvoker) *testConn {
	n.t.Helper()
	resp, ok := n.request(n.hub, &fabric.ConnectRequest{
		Info:    &fabric.ConnectionInfo{ID: id, UserID: user, Hub: "chat", Items: map[string]any{}, Outlet: out},
		Invoker: inv,
	}).(*fabric.ConnectResponse)
	if !ok || resp.Err != nil || resp.Inbound == nil {
		n.t.Fatalf("connect %s: %#v", id, resp)
	}
	c := &testConn{id: id, out: out, inv: inv, in: resp.Inbound}
	n.conns = append(n.conns, c)
	return c
}

// send asks the hub to send target(args...) on route and returns its
// answer.
func (n *testNode) send(route Route, target string, args ...any) *SendResponse {
	n.t.Helper()
	req, err := NewSendRequest(route, target, args...)
	if err != nil {
		n.t.Fatalf("NewSendRequest: %v", err)
	}
	resp, ok := n.request(n.hub, req).(*SendResponse)
	if !ok {
		n.t.Fatalf("send: answer is not a *SendResponse")
	}
	return resp
}

// mustSend is send, failing the test on an error in the answer.
func (n *testNode) mustSend(route Route, target string, args ...any) {
	n.t.Helper()
	if resp := n.send(route, target, args...); resp.Err != nil {
		n.t.Fatalf("send %s on %+v: %v", target, route, resp.Err)
	}
}

// group asks the hub for a group change and returns its answer.
func (n *testNode) group(action GroupAction, connID, group string) *GroupResponse {
	n.t.Helper()
	resp, ok := n.request(n.hub, &GroupRequest{Action: action, ConnectionID: connID, Group: group}).(*GroupResponse)
	if !ok {
		n.t.Fatalf("group: answer is not a *GroupResponse")
	}
	return resp
}

// mustGroup is group, failing the test on an error in the answer.
func (n *testNode) mustGroup(action GroupAction, connID, group string) {
	n.t.Helper()
	if resp := n.group(action, connID, group); resp.Err != nil {
		n.t.Fatalf("group %v %s %s: %v", action, connID, group, resp.Err)
	}
}

// record returns the framed record of target(args...) in p, computed here
// independently of NewSendRequest.
func record(t testing.TB, p protocol.HubProtocol, target string, args ...any) []byte {
	t.Helper()
	b, err := p.AppendMessage(nil, &protocol.Invocation{Target: target, Arguments: args})
	if err != nil {
		t.Fatalf("encode %s: %v", target, err)
	}
	return b
}

// checkRecords fails unless out has exactly the records of targets (each
// called with no arguments), in its protocol, in that order.
func checkRecords(t testing.TB, out *fakeOutlet, targets ...string) {
	t.Helper()
	got := out.recordsNow()
	want := make([][]byte, len(targets))
	for i, target := range targets {
		want[i] = record(t, out.protocol, target)
	}
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("%s (%s) got records %q, want %q", out.id, out.protocol.Name(), got, want)
	}
}

// invocationEnvelope returns the backplane payload of a send of target
// (no arguments) made on node origin.
func invocationEnvelope(t testing.TB, origin, target string, excluded ...string) []byte {
	t.Helper()
	return marshalEnvelope(t, &fabricv1.Envelope{OriginNode: origin, Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{
		ExcludedConnectionIds: excluded,
		Json:                  record(t, protocol.JSON, target),
		Messagepack:           record(t, protocol.MessagePack, target),
	}}})
}

func marshalEnvelope(t testing.TB, env *fabricv1.Envelope) []byte {
	t.Helper()
	b, err := proto.Marshal(env)
	if err != nil {
		t.Fatalf("marshal envelope: %v", err)
	}
	return b
}

// isType reports whether m is a T.
func isType[T any](m any) bool {
	_, ok := m.(T)
	return ok
}
