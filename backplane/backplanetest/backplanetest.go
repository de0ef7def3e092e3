// Package backplanetest is the conformance suite for backplane.Backplane:
// every implementation runs it from its own tests, Memory in every `go test`
// and Redis under its integration setup.
//
//	func TestConformance(t *testing.T) {
//		backplanetest.Run(t, backplanetest.Features{}, func(t *testing.T, n int) []backplane.Backplane {
//			// n unstarted backplanes on one transport, closed with t.Cleanup
//		})
//	}
//
// The suite waits on deliveries, never on time; its only timeouts guard
// against hanging when something is never delivered.
package backplanetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
)

// Factory returns n backplanes attached to one transport (one Redis, one
// MemoryBus), not yet started, and registers t.Cleanup to close them. Each
// call may share the transport with other calls, so implementations need
// not isolate them: the suite gives every subtest its own channel names.
type Factory func(t *testing.T, n int) []backplane.Backplane

// Features declares optional abilities of the implementation under test;
// the zero value runs the tests every Backplane must pass.
type Features struct {
	// FaultInjection, if set, makes b lose (ok=false) or regain (ok=true)
	// its transport, as backplane.Memory.SetAvailable does. It enables the
	// outage tests.
	FaultInjection func(b backplane.Backplane, ok bool)
}

// WaitTimeout bounds every wait of the suite. It only turns a hang into a
// failure; passing runs never wait for it. A slow transport may raise it;
// set it before Run, never while the suite runs.
var WaitTimeout = 10 * time.Second

// Run runs the suite as parallel subtests of t.
func Run(t *testing.T, f Features, newBackplanes Factory) {
	t.Helper()
	tests := []struct {
		name  string
		fault bool
		run   func(*testing.T, *env)
	}{
		{name: "SubscribeThenPublishDeliversOnce", run: testDeliversOnce},
		{name: "OwnMessagesComeBack", run: testOwnMessages},
		{name: "UnsubscribeStopsDelivery", run: testUnsubscribe},
		{name: "OrderPerPublisherPerChannel", run: testOrder},
		{name: "SeveralChannelsInOnePublish", run: testSeveralChannels},
		{name: "UnsubscribedChannelsNotDelivered", run: testNotSubscribed},
		{name: "ConcurrentPublishers", run: testConcurrentPublishers},
		{name: "CancelledContext", run: testCancelledContext},
		{name: "CloseIdempotentThenErrClosed", run: testClose},
		{name: "PublishDuringOutage", fault: true, run: testPublishDuringOutage},
		{name: "OutageEventsAndResume", fault: true, run: testOutageEvents},
		{name: "ChangesDuringOutageAreKept", fault: true, run: testChangesDuringOutage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.fault && f.FaultInjection == nil {
				t.Skip("needs Features.FaultInjection")
			}
			tt.run(t, &env{t: t, f: f, factory: newBackplanes})
		})
	}
}

// env is what a subtest works with.
type env struct {
	t       *testing.T
	f       Features
	factory Factory
}

// node is a started backplane and what its Handler recorded.
type node struct {
	bp  backplane.Backplane
	rec *recorder
}

// start makes n backplanes, starts each with a recorder and returns them.
func (e *env) start(n int) []node {
	e.t.Helper()
	bps := e.factory(e.t, n)
	if len(bps) != n {
		e.t.Fatalf("factory returned %d backplanes, want %d", len(bps), n)
	}
	nodes := make([]node, n)
	for i, bp := range bps {
		rec := newRecorder()
		if err := bp.Start(e.t.Context(), rec); err != nil {
			e.t.Fatalf("Start backplane %d: %v", i, err)
		}
		nodes[i] = node{bp: bp, rec: rec}
		e.t.Cleanup(func() {
			_ = bp.Close() // idempotent; closes before the recorder is checked
			if v := rec.violation(); v != "" {
				e.t.Errorf("backplane %d: %s", i, v)
			}
		})
	}
	return nodes
}

// ch names a channel unique to this subtest, so backplanes sharing one
// transport across subtests do not see each other's traffic.
func (e *env) ch(name string) string {
	return "bptest/" + e.t.Name() + "/" + name
}

func (e *env) subscribe(n node, channels ...string) {
	e.t.Helper()
	if err := n.bp.Subscribe(e.t.Context(), channels...); err != nil {
		e.t.Fatalf("Subscribe(%q): %v", channels, err)
	}
}

func (e *env) unsubscribe(n node, channels ...string) {
	e.t.Helper()
	if err := n.bp.Unsubscribe(e.t.Context(), channels...); err != nil {
		e.t.Fatalf("Unsubscribe(%q): %v", channels, err)
	}
}

func (e *env) publish(n node, msgs ...backplane.Message) {
	e.t.Helper()
	if err := n.bp.Publish(e.t.Context(), msgs); err != nil {
		e.t.Fatalf("Publish: %v", err)
	}
}

func msg(channel, payload string) backplane.Message {
	return backplane.Message{Channel: channel, Payload: []byte(payload)}
}

func testDeliversOnce(t *testing.T, e *env) {
	nodes := e.start(4)
	c := e.ch("c")
	subs, pub := nodes[:3], nodes[3]
	for _, n := range subs {
		e.subscribe(n, c)
	}
	// No wait between Subscribe and Publish: Subscribe is in effect when it
	// returns.
	e.publish(pub, msg(c, "a"))
	e.publish(pub, msg(c, "b"))
	for i, n := range subs {
		n.rec.waitPayloads(t, c, 2)
		if got, want := n.rec.payloads(c), []string{"a", "b"}; !slices.Equal(got, want) {
			t.Errorf("subscriber %d got %q, want %q exactly once each", i, got, want)
		}
	}
}

func testOwnMessages(t *testing.T, e *env) {
	nodes := e.start(1)
	n := nodes[0]
	c := e.ch("own")
	e.subscribe(n, c)
	e.publish(n, msg(c, "mine"))
	n.rec.waitPayloads(t, c, 1)
	if got := n.rec.payloads(c); !slices.Equal(got, []string{"mine"}) {
		t.Errorf("got %q, want [mine]", got)
	}
}

func testUnsubscribe(t *testing.T, e *env) {
	nodes := e.start(2)
	sub, pub := nodes[0], nodes[1]
	c, marker := e.ch("c"), e.ch("marker")
	e.subscribe(sub, c, marker)
	e.publish(pub, msg(c, "before"))
	sub.rec.waitPayloads(t, c, 1)

	e.unsubscribe(sub, c)
	e.unsubscribe(sub, e.ch("never-subscribed")) // unknown channels are ignored
	e.publish(pub, msg(c, "after"))
	// The contract does not order channels against each other, so the marker
	// cannot prove "after" will never come; it does catch the usual failure,
	// and Close (in cleanup) ends any later delivery.
	e.publish(pub, msg(marker, "m"))
	sub.rec.waitPayloads(t, marker, 1)
	if got := sub.rec.payloads(c); !slices.Equal(got, []string{"before"}) {
		t.Errorf("after Unsubscribe, channel got %q, want only [before]", got)
	}
}

func testOrder(t *testing.T, e *env) {
	const total = 1000
	nodes := e.start(3)
	pub, subs := nodes[0], nodes
	c := e.ch("order")
	for _, n := range subs {
		e.subscribe(n, c)
	}
	// Half in successive calls, half in batches of 50 per call.
	for i := range total / 2 {
		e.publish(pub, msg(c, fmt.Sprint(i)))
	}
	for i := total / 2; i < total; i += 50 {
		batch := make([]backplane.Message, 0, 50)
		for j := i; j < i+50; j++ {
			batch = append(batch, msg(c, fmt.Sprint(j)))
		}
		e.publish(pub, batch...)
	}
	for i, n := range subs {
		n.rec.waitPayloads(t, c, total)
		got := n.rec.payloads(c)
		if len(got) != total {
			t.Fatalf("subscriber %d got %d messages, want %d", i, len(got), total)
		}
		for j, p := range got {
			if p != fmt.Sprint(j) {
				t.Fatalf("subscriber %d: message %d is %q, want %q (out of order)", i, j, p, fmt.Sprint(j))
			}
		}
	}
}

func testSeveralChannels(t *testing.T, e *env) {
	nodes := e.start(2)
	sub, pub := nodes[0], nodes[1]
	c1, c2, c3 := e.ch("c1"), e.ch("c2"), e.ch("c3")
	e.subscribe(sub, c1, c2, c3)
	e.subscribe(sub, c1) // idempotent: still delivered once
	e.publish(pub, msg(c1, "a"), msg(c2, "b"), msg(c3, "c"), msg(c1, "d"))
	sub.rec.waitCount(t, 4)
	want := map[string][]string{c1: {"a", "d"}, c2: {"b"}, c3: {"c"}}
	for ch, w := range want {
		if got := sub.rec.payloads(ch); !slices.Equal(got, w) {
			t.Errorf("channel %s got %q, want %q", ch, got, w)
		}
	}
	if n := sub.rec.count(); n != 4 {
		t.Errorf("got %d messages, want 4", n)
	}
}

func testNotSubscribed(t *testing.T, e *env) {
	nodes := e.start(3)
	sub, pub, bystander := nodes[0], nodes[1], nodes[2]
	c, other := e.ch("c"), e.ch("other")
	e.subscribe(sub, c)
	e.subscribe(bystander, other)
	e.publish(pub, msg(other, "x"))
	e.publish(pub, msg(c, "y"))
	sub.rec.waitPayloads(t, c, 1)
	bystander.rec.waitPayloads(t, other, 1)
	if got := sub.rec.payloads(other); len(got) != 0 {
		t.Errorf("got %q on a channel never subscribed", got)
	}
	if got := bystander.rec.payloads(c); len(got) != 0 {
		t.Errorf("bystander got %q on a channel never subscribed", got)
	}
	if got := pub.rec.count(); got != 0 {
		t.Errorf("publisher without subscriptions got %d messages", got)
	}
}

func testConcurrentPublishers(t *testing.T, e *env) {
	const (
		nodesN     = 4
		goroutines = 3 // per node
		perG       = 100
		total      = nodesN * goroutines * perG
	)
	nodes := e.start(nodesN)
	c := e.ch("c")
	for _, n := range nodes {
		e.subscribe(n, c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, nodesN*goroutines)
	for i, n := range nodes {
		for g := range goroutines {
			wg.Go(func() {
				for k := range perG {
					m := msg(c, fmt.Sprintf("%d/%d/%d", i, g, k))
					if err := n.bp.Publish(t.Context(), []backplane.Message{m}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	for i, n := range nodes {
		n.rec.waitPayloads(t, c, total)
		got := n.rec.payloads(c)
		if len(got) != total {
			t.Fatalf("subscriber %d got %d messages, want %d", i, len(got), total)
		}
		// Each goroutine publishes in successive calls, so its messages keep
		// their order; goroutines interleave freely.
		next := map[string]int{}
		for _, p := range got {
			cut := strings.LastIndexByte(p, '/')
			sender, seq := p[:cut], p[cut+1:]
			if want := fmt.Sprint(next[sender]); seq != want {
				t.Fatalf("subscriber %d: from %s got #%s, want #%s (duplicate or out of order)", i, sender, seq, want)
			}
			next[sender]++
		}
	}
}

func testCancelledContext(t *testing.T, e *env) {
	nodes := e.start(1)
	n := nodes[0]
	c := e.ch("c")
	e.subscribe(n, c)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := n.bp.Publish(ctx, []backplane.Message{msg(c, "x")})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled ctx = %v, want context.Canceled", err)
	}
	// It did not take effect: the next message is the first delivered.
	e.publish(n, msg(c, "y"))
	n.rec.waitPayloads(t, c, 1)
	if got := n.rec.payloads(c); !slices.Equal(got, []string{"y"}) {
		t.Errorf("got %q, want [y]", got)
	}
}

func testClose(t *testing.T, e *env) {
	nodes := e.start(2)
	closing, pub := nodes[0], nodes[1]
	c := e.ch("c")
	e.subscribe(closing, c)
	e.subscribe(pub, c)
	for i := range 2 {
		if err := closing.bp.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	closing.rec.markClosed() // from here any Handler call is a violation
	ctx := t.Context()
	for name, err := range map[string]error{
		"Publish":     closing.bp.Publish(ctx, []backplane.Message{msg(c, "x")}),
		"Subscribe":   closing.bp.Subscribe(ctx, c),
		"Unsubscribe": closing.bp.Unsubscribe(ctx, c),
	} {
		if !errors.Is(err, backplane.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	// Others keep working and the closed one hears nothing.
	e.publish(pub, msg(c, "after-close"))
	pub.rec.waitPayloads(t, c, 1)

	// Start after Close, on one never started.
	fresh := e.factory(t, 1)[0]
	if err := fresh.Close(); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
	if err := fresh.Start(ctx, newRecorder()); !errors.Is(err, backplane.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

func testPublishDuringOutage(t *testing.T, e *env) {
	nodes := e.start(1)
	n := nodes[0]
	c := e.ch("c")
	e.subscribe(n, c)
	e.f.FaultInjection(n.bp, false)
	ctx := t.Context()
	if err := n.bp.Publish(ctx, []backplane.Message{msg(c, "x")}); !errors.Is(err, backplane.ErrUnavailable) {
		t.Errorf("Publish during outage = %v, want ErrUnavailable", err)
	}
	if err := n.bp.Subscribe(ctx, e.ch("other")); !errors.Is(err, backplane.ErrUnavailable) {
		t.Errorf("Subscribe during outage = %v, want ErrUnavailable", err)
	}
	n.rec.waitEvents(t, 1)
	e.f.FaultInjection(n.bp, true)
	n.rec.waitKind(t, backplane.EventRestored)
	e.publish(n, msg(c, "y"))
	n.rec.waitPayloads(t, c, 1)
	if got := n.rec.payloads(c); !slices.Equal(got, []string{"y"}) {
		t.Errorf("got %q, want [y]: a failed Publish must not deliver", got)
	}
}

func testOutageEvents(t *testing.T, e *env) {
	nodes := e.start(2)
	sub, pub := nodes[0], nodes[1]
	c := e.ch("c")
	e.subscribe(sub, c)
	e.publish(pub, msg(c, "before"))
	sub.rec.waitPayloads(t, c, 1)

	e.f.FaultInjection(sub.bp, false)
	sub.rec.waitKind(t, backplane.EventDown)
	// Published while sub is down: it may be lost for sub, but never twice.
	e.publish(pub, msg(c, "during"))
	e.f.FaultInjection(sub.bp, true)
	sub.rec.waitKind(t, backplane.EventRestored)

	events := sub.rec.events()
	kinds := make([]backplane.EventKind, len(events))
	for i, ev := range events {
		kinds[i] = ev.Kind
	}
	want := []backplane.EventKind{backplane.EventDown, backplane.EventGap, backplane.EventRestored}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	if events[0].Err == nil {
		t.Errorf("EventDown has no Err")
	}
	if !slices.Contains(events[1].Channels, c) {
		t.Errorf("EventGap channels %q do not name %q", events[1].Channels, c)
	}

	e.publish(pub, msg(c, "after"))
	sub.rec.waitUntil(t, "the message published after the outage", func() bool {
		return slices.Contains(sub.rec.payloads(c), "after")
	})
	got := sub.rec.payloads(c)
	if got[0] != "before" || got[len(got)-1] != "after" || len(got) > 3 {
		t.Errorf("got %q, want [before (during) after]", got)
	}
}

// testChangesDuringOutage: a subscribe asked while the transport is down
// fails with ErrUnavailable (the caller knows it missed what came
// meanwhile), an unsubscribe may; both are in effect once it is back,
// without being asked again.
func testChangesDuringOutage(t *testing.T, e *env) {
	nodes := e.start(2)
	sub, pub := nodes[0], nodes[1]
	old, added, marker := e.ch("old"), e.ch("added"), e.ch("marker")
	e.subscribe(sub, old, marker)
	e.f.FaultInjection(sub.bp, false)
	sub.rec.waitKind(t, backplane.EventDown)
	ctx := t.Context()
	if err := sub.bp.Subscribe(ctx, added); !errors.Is(err, backplane.ErrUnavailable) {
		t.Errorf("Subscribe during outage = %v, want ErrUnavailable", err)
	}
	if err := sub.bp.Unsubscribe(ctx, old); err != nil && !errors.Is(err, backplane.ErrUnavailable) {
		t.Errorf("Unsubscribe during outage = %v, want nil or ErrUnavailable", err)
	}
	e.f.FaultInjection(sub.bp, true)
	sub.rec.waitKind(t, backplane.EventRestored)
	e.publish(pub, msg(old, "stale"), msg(added, "new"), msg(marker, "end"))
	sub.rec.waitPayloads(t, marker, 1)
	sub.rec.waitPayloads(t, added, 1)
	if got := sub.rec.payloads(added); !slices.Equal(got, []string{"new"}) {
		t.Errorf("channel subscribed during the outage got %q, want [new]", got)
	}
	if got := sub.rec.payloads(old); len(got) != 0 {
		t.Errorf("channel unsubscribed during the outage got %q, want nothing", got)
	}
}
