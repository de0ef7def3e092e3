package backplane

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// failAfter bounds waits; passing tests never reach it.
const failAfter = 10 * time.Second

// probe is a Handler that forwards what it is given to channels, and can
// hold a HandleMessage call until the test lets it go.
type probe struct {
	msgs chan Message
	evs  chan Event
	// hold, if set, is called inside HandleMessage before forwarding.
	hold func(Message)
}

func newProbe() *probe {
	return &probe{msgs: make(chan Message, 1024), evs: make(chan Event, 64)}
}

func (p *probe) HandleMessage(channel string, payload []byte) {
	m := Message{Channel: channel, Payload: payload}
	if p.hold != nil {
		p.hold(m)
	}
	p.msgs <- m
}

func (p *probe) HandleEvent(ev Event) { p.evs <- ev }

func (p *probe) nextMsg(t *testing.T) Message {
	t.Helper()
	select {
	case m := <-p.msgs:
		return m
	case <-time.After(failAfter):
		t.Fatal("timed out waiting for a message")
	}
	return Message{}
}

func (p *probe) nextEvent(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-p.evs:
		return ev
	case <-time.After(failAfter):
		t.Fatal("timed out waiting for an event")
	}
	return Event{}
}

// gate makes p hold the first HandleMessage on channel until release is
// closed; entered is closed once that call is being held.
func (p *probe) gate(channel string) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	first := true
	p.hold = func(m Message) { // only ever called from the delivery goroutine
		if first && m.Channel == channel {
			first = false
			close(entered)
			<-release
		}
	}
	return entered, release
}

func startMemory(t *testing.T, m *Memory, h Handler) {
	t.Helper()
	if err := m.Start(t.Context(), h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
}

func mustDo(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func msgs(channel string, payloads ...string) []Message {
	out := make([]Message, len(payloads))
	for i, p := range payloads {
		out[i] = Message{Channel: channel, Payload: []byte(p)}
	}
	return out
}

func TestMemoryOverflowIsReportedAsGap(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := NewMemory()
	m.limit = 3
	p := newProbe()
	entered, release := p.gate("c")
	startMemory(t, m, p)
	mustDo(t, "Subscribe", m.Subscribe(ctx, "c", "d"))

	mustDo(t, "Publish", m.Publish(ctx, msgs("c", "0")))
	<-entered // "0" is being handled, so the queue is empty
	mustDo(t, "Publish", m.Publish(ctx, msgs("c", "1", "2", "3", "4", "5")))
	mustDo(t, "Publish", m.Publish(ctx, msgs("d", "6"))) // dropped too
	close(release)

	for _, want := range []string{"0", "1", "2", "3"} {
		if got := p.nextMsg(t); string(got.Payload) != want {
			t.Fatalf("got %q, want %q", got.Payload, want)
		}
	}
	ev := p.nextEvent(t)
	if ev.Kind != EventGap || !slices.Equal(ev.Channels, []string{"c", "d"}) {
		t.Fatalf("got event %v %q, want gap [c d]", ev.Kind, ev.Channels)
	}
	mustDo(t, "Publish", m.Publish(ctx, msgs("c", "7")))
	if got := p.nextMsg(t); string(got.Payload) != "7" {
		t.Fatalf("after the gap got %q, want 7", got.Payload)
	}
}

func TestMemoryGapPrecedesLaterMessages(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := NewMemory()
	m.limit = 1
	p := newProbe()
	entered, release := p.gate("c")
	startMemory(t, m, p)
	mustDo(t, "Subscribe", m.Subscribe(ctx, "c"))
	mustDo(t, "Publish", m.Publish(ctx, msgs("c", "0")))
	<-entered
	mustDo(t, "Publish", m.Publish(ctx, msgs("c", "1", "2"))) // "2" dropped
	// Before the handler catches up, an event takes the gap with it.
	m.SetAvailable(false)
	close(release)
	for _, want := range []string{"0", "1"} {
		if got := p.nextMsg(t); string(got.Payload) != want {
			t.Fatalf("got %q, want %q", got.Payload, want)
		}
	}
	if ev := p.nextEvent(t); ev.Kind != EventGap {
		t.Fatalf("got %v, want gap before down", ev.Kind)
	}
	if ev := p.nextEvent(t); ev.Kind != EventDown {
		t.Fatalf("got %v, want down", ev.Kind)
	}
}

func TestMemoryUnsubscribeDropsQueuedMessages(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := NewMemory()
	p := newProbe()
	entered, release := p.gate("hold")
	startMemory(t, m, p)
	mustDo(t, "Subscribe", m.Subscribe(ctx, "hold", "c"))
	mustDo(t, "Publish", m.Publish(ctx, msgs("hold", "h")))
	<-entered
	mustDo(t, "Publish", m.Publish(ctx, msgs("c", "queued")))
	mustDo(t, "Unsubscribe", m.Unsubscribe(ctx, "c")) // "hold" is in flight, not "c": no wait
	mustDo(t, "Publish", m.Publish(ctx, msgs("hold", "marker")))
	close(release)
	for _, want := range []string{"h", "marker"} { // one FIFO: "queued" would come between
		if got := p.nextMsg(t); string(got.Payload) != want {
			t.Fatalf("got %s %q, want %q", got.Channel, got.Payload, want)
		}
	}
}

func TestMemoryUnsubscribeWaitsForCallInProgress(t *testing.T) {
	t.Parallel()
	// synctest.Wait makes "Unsubscribe is still waiting" observable.
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		m := NewMemory()
		p := newProbe()
		entered, release := p.gate("c")
		startMemory(t, m, p)
		mustDo(t, "Subscribe", m.Subscribe(ctx, "c"))
		mustDo(t, "Publish", m.Publish(ctx, msgs("c", "x")))
		<-entered
		done := make(chan error, 1)
		go func() { done <- m.Unsubscribe(ctx, "c") }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Unsubscribe returned (%v) while HandleMessage on its channel was running", err)
		default:
		}
		close(release)
		mustDo(t, "Unsubscribe", <-done)
		p.nextMsg(t)

		// A ctx that ends first releases the waiter.
		entered, release = p.gate("d")
		mustDo(t, "Subscribe", m.Subscribe(ctx, "d"))
		mustDo(t, "Publish", m.Publish(ctx, msgs("d", "y")))
		<-entered
		short, cancel := context.WithCancel(ctx)
		go func() { done <- m.Unsubscribe(short, "d") }()
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Unsubscribe whose ctx was cancelled while waiting = %v, want context.Canceled", err)
		}
		close(release)
	})
}

func TestMemoryCloseWaitsForHandler(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		m := NewMemory()
		p := newProbe()
		entered, release := p.gate("c")
		startMemory(t, m, p)
		mustDo(t, "Subscribe", m.Subscribe(ctx, "c"))
		mustDo(t, "Publish", m.Publish(ctx, msgs("c", "x", "never")))
		<-entered
		done := make(chan error, 2)
		go func() { done <- m.Close() }()
		go func() { done <- m.Close() }()
		synctest.Wait() // both Close calls are now waiting for the handler
		select {
		case <-done:
			t.Fatal("Close returned while a Handler call was running")
		default:
		}
		close(release)
		for range 2 {
			mustDo(t, "Close", <-done)
		}
		if got := p.nextMsg(t); string(got.Payload) != "x" {
			t.Fatalf("got %q, want x", got.Payload)
		}
		select {
		case got := <-p.msgs:
			t.Fatalf("delivered %q after Close", got.Payload)
		default:
		}
	})
}

func TestMemoryPayloadsAreCopied(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	bus := NewMemoryBus()
	a, b := bus.NewBackplane(), bus.NewBackplane()
	pa, pb := newProbe(), newProbe()
	startMemory(t, a, pa)
	startMemory(t, b, pb)
	mustDo(t, "Subscribe", a.Subscribe(ctx, "c"))
	mustDo(t, "Subscribe", b.Subscribe(ctx, "c"))
	payload := []byte("original")
	mustDo(t, "Publish", a.Publish(ctx, []Message{{Channel: "c", Payload: payload}}))
	copy(payload, "CHANGED!") // the caller may reuse its buffer
	ga, gb := pa.nextMsg(t), pb.nextMsg(t)
	if string(ga.Payload) != "original" || string(gb.Payload) != "original" {
		t.Fatalf("got %q and %q, want both original", ga.Payload, gb.Payload)
	}
	ga.Payload[0] = 'X' // the handler owns it
	if string(gb.Payload) != "original" {
		t.Fatalf("one subscriber's change reached another: %q", gb.Payload)
	}
}

func TestMemoryPrivateBuses(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := NewMemory(), NewMemory()
	pa, pb := newProbe(), newProbe()
	startMemory(t, a, pa)
	startMemory(t, b, pb)
	mustDo(t, "Subscribe", a.Subscribe(ctx, "c"))
	mustDo(t, "Subscribe", b.Subscribe(ctx, "c"))
	mustDo(t, "Publish", b.Publish(ctx, msgs("c", "from-b")))
	mustDo(t, "Publish", a.Publish(ctx, msgs("c", "from-a")))
	if got := pa.nextMsg(t); string(got.Payload) != "from-a" {
		t.Fatalf("a got %q, want only its own from-a", got.Payload)
	}
	if got := pb.nextMsg(t); string(got.Payload) != "from-b" {
		t.Fatalf("b got %q, want only its own from-b", got.Payload)
	}
}

func TestMemorySetAvailable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := NewMemory()
	p := newProbe()
	startMemory(t, m, p)
	m.SetAvailable(true) // already available: nothing
	m.SetAvailable(false)
	m.SetAvailable(false) // repeated: nothing
	if err := m.Unsubscribe(ctx, "c"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Unsubscribe while unavailable = %v, want ErrUnavailable", err)
	}
	m.SetAvailable(true)
	// Nothing subscribed: no gap to report.
	for _, want := range []EventKind{EventDown, EventRestored} {
		if ev := p.nextEvent(t); ev.Kind != want {
			t.Fatalf("got %v, want %v", ev.Kind, want)
		}
	}
	mustDo(t, "Subscribe", m.Subscribe(ctx, "c"))
	m.SetAvailable(false)
	m.SetAvailable(true)
	want := []EventKind{EventDown, EventGap, EventRestored}
	for _, k := range want {
		if ev := p.nextEvent(t); ev.Kind != k {
			t.Fatalf("got %v, want %v", ev.Kind, k)
		}
	}
	select {
	case ev := <-p.evs:
		t.Fatalf("unexpected extra event %v", ev.Kind)
	default:
	}
}

func TestMemoryStartMisuse(t *testing.T) {
	t.Parallel()
	m := NewMemory()
	if err := m.Start(t.Context(), nil); err == nil {
		t.Fatal("Start(nil) succeeded")
	}
	startMemory(t, m, newProbe())
	if err := m.Start(t.Context(), newProbe()); err == nil {
		t.Fatal("second Start succeeded")
	}
}
