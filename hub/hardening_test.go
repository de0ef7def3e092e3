package hub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// panicArg panics when a client's value is bound to it.
type panicArg struct{}

func (*panicArg) UnmarshalJSON([]byte) error { panic("bad argument type") }

// panicResult panics when it is encoded for the client.
type panicResult struct{}

func (panicResult) MarshalJSON() ([]byte, error) { panic("bad result type") }

// panicky is a hub whose code panics in every place hub code runs.
type panicky struct{}

func (panicky) Echo(_ *hub.Context, s string) string { return s }
func (panicky) Body(*hub.Context) error              { panic("in the body") }
func (panicky) Bind(*hub.Context, panicArg) error    { return nil }
func (panicky) Result(*hub.Context) panicResult      { return panicResult{} }
func (panicky) Item(*hub.Context) <-chan panicResult { return oneItem(panicResult{}) }
func (panicky) Upload(_ *hub.Context, xs <-chan panicArg) int {
	n := 0
	for range xs {
		n++
	}
	return n
}

// Producer streams two items, then panics in its producer goroutine.
func (panicky) Producer(c *hub.Context) <-chan int {
	return hub.Produce(c, func(send func(int) bool) error {
		send(1)
		send(2)
		panic("in the producer")
	})
}

// Refuse streams one item, then fails with an error the client sees.
func (panicky) Refuse(c *hub.Context) <-chan int {
	return hub.Produce(c, func(send func(int) bool) error {
		send(1)
		return hub.Errorf("no more")
	})
}

func oneItem[T any](v T) <-chan T {
	ch := make(chan T, 1)
	ch <- v
	close(ch)
	return ch
}

// TestHubCodePanicsEndTheCallNotTheNode: a panic anywhere hub code runs
// (the method body, binding an argument, encoding a result or a stream
// item, an upload item's type, a Produce goroutine) ends that invocation
// with an error Completion; the connection answers its next call. Without
// the recovery, the binding, upload and producer cases crash the process
// (they run on goroutines nothing recovered), and the encoding cases panic
// in the connection actor.
func TestHubCodePanicsEndTheCallNotTheNode(t *testing.T) {
	tn := startNode(t, hub.Config{}, map[string]any{"p": panicky{}})
	c, _, err := dialRaw(t, tn.url, "p", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	const generic = "An unexpected error occurred invoking '%s' on the server."
	for i, tc := range []struct {
		msg   protocol.Message
		items int
		err   string
	}{
		{&protocol.Invocation{Target: "Body"}, 0, fmt.Sprintf(generic, "Body")},
		{&protocol.Invocation{Target: "Bind", Arguments: []any{1}}, 0, fmt.Sprintf(generic, "Bind")},
		{&protocol.Invocation{Target: "Result"}, 0, fmt.Sprintf(generic, "Result")},
		{&protocol.StreamInvocation{Target: "Item"}, 0, fmt.Sprintf(generic, "Item")},
		{&protocol.StreamInvocation{Target: "Producer"}, 2, fmt.Sprintf(generic, "Producer")},
		{&protocol.StreamInvocation{Target: "Refuse"}, 1, fmt.Sprintf(generic, "Refuse") + " HubException: no more"},
		{&protocol.Invocation{Target: "Upload", StreamIDs: []string{"u"}}, 0, fmt.Sprintf(generic, "Upload") + " HubException: Stream 'u' failed: panic: bad argument type"},
	} {
		id := fmt.Sprint(i + 1)
		switch m := tc.msg.(type) {
		case *protocol.Invocation:
			m.InvocationID = id
			c.send(m)
			if len(m.StreamIDs) > 0 {
				c.send(&protocol.StreamItem{InvocationID: "u", Item: 1})
				c.send(&protocol.Completion{InvocationID: "u"})
			}
		case *protocol.StreamInvocation:
			m.InvocationID = id
			c.send(m)
		}
		for n := 0; n < tc.items; n++ {
			if it, ok := c.next().(*protocol.StreamItem); !ok || it.InvocationID != id {
				t.Fatalf("call %s: got %#v, want stream item %d", id, it, n+1)
			}
		}
		comp, ok := c.next().(*protocol.Completion)
		if !ok || comp.InvocationID != id || comp.Error != tc.err {
			t.Fatalf("call %s (%T): completion %+v, want error %q", id, tc.msg, comp, tc.err)
		}
		echoRoundTrip(t, c, "after-"+id)
	}
}

// blocker is a hub whose streams run until cancelled.
type blocker struct{}

func (blocker) Echo(_ *hub.Context, s string) string { return s }

// Wait streams nothing until the client cancels.
func (blocker) Wait(c *hub.Context) <-chan int {
	return hub.Produce(c, func(func(int) bool) error { <-c.Done(); return nil })
}

// Keep reads its upload stream to the end.
func (blocker) Keep(_ *hub.Context, xs <-chan int) int {
	n := 0
	for range xs {
		n++
	}
	return n
}

// TestStreamsPerConnectionAreBounded: past MaxStreamsPerConnection (server
// and upload streams together) an invocation fails with an error naming
// the limit; once a stream ends, a new one is allowed. (100,000 Counter
// streams held 200,011 goroutines and 1.6 GB before.)
func TestStreamsPerConnectionAreBounded(t *testing.T) {
	tn := startNode(t, hub.Config{MaxStreamsPerConnection: 2}, map[string]any{"b": blocker{}})
	c, _, err := dialRaw(t, tn.url, "b", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	c.send(&protocol.StreamInvocation{InvocationID: "1", Target: "Wait"})
	c.send(&protocol.Invocation{InvocationID: "2", Target: "Keep", StreamIDs: []string{"u1"}})
	c.send(&protocol.StreamInvocation{InvocationID: "3", Target: "Wait"})
	c.send(&protocol.Invocation{InvocationID: "4", Target: "Keep", StreamIDs: []string{"u2"}})
	for _, id := range []string{"3", "4"} {
		comp, ok := c.next().(*protocol.Completion)
		want := "the connection has 2 streams open and the limit is 2 (MaxStreamsPerConnection)"
		if !ok || comp.InvocationID != id || !strings.Contains(comp.Error, want) {
			t.Fatalf("completion %+v, want call %s refused with %q", comp, id, want)
		}
	}
	c.send(&protocol.CancelInvocation{InvocationID: "1"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "1" || comp.Error != "" {
		t.Fatalf("completion %+v, want stream 1 ended", comp)
	}
	c.send(&protocol.StreamInvocation{InvocationID: "5", Target: "Wait"})
	c.send(&protocol.CancelInvocation{InvocationID: "5"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "5" || comp.Error != "" {
		t.Fatalf("completion %+v, want stream 5 run and ended", comp)
	}
	c.send(&protocol.StreamItem{InvocationID: "u1", Item: 7})
	c.send(&protocol.Completion{InvocationID: "u1"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "2" || comp.Error != "" {
		t.Fatalf("completion %+v, want upload call 2 answered", comp)
	}
	echoRoundTrip(t, c, "e")
}

// TestDuplicateInvocationIDIsRefused: a second invocation with the id of
// one still running is refused, as in ASP.NET, and the first one can
// still be cancelled (it was orphaned before: its id pointed at the
// second call's cancel).
func TestDuplicateInvocationIDIsRefused(t *testing.T) {
	tn := startNode(t, hub.Config{MaxParallelInvocations: 4}, map[string]any{"b": blocker{}})
	c, _, err := dialRaw(t, tn.url, "b", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	c.send(&protocol.StreamInvocation{InvocationID: "s", Target: "Wait"})
	c.send(&protocol.StreamInvocation{InvocationID: "s", Target: "Wait"})
	comp, ok := c.next().(*protocol.Completion)
	if !ok || comp.InvocationID != "s" || comp.Error != "Invocation ID 's' is already in use." {
		t.Fatalf("completion %+v, want the duplicate refused", comp)
	}
	c.send(&protocol.CancelInvocation{InvocationID: "s"})
	comp, ok = c.next().(*protocol.Completion)
	if !ok || comp.InvocationID != "s" || comp.Error != "" {
		t.Fatalf("completion %+v, want the first stream cancelled", comp)
	}
	// The id is free again once its call ended.
	c.send(&protocol.StreamInvocation{InvocationID: "s", Target: "Wait"})
	c.send(&protocol.CancelInvocation{InvocationID: "s"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.Error != "" {
		t.Fatalf("completion %+v, want the reused id to run", comp)
	}
}

// grouper joins and sends to groups.
type grouper struct{}

func (grouper) Join(c *hub.Context, g string) error  { return c.Groups.Add(c, c.ConnectionID, g) }
func (grouper) Leave(c *hub.Context, g string) error { return c.Groups.Remove(c, c.ConnectionID, g) }
func (grouper) Send(c *hub.Context, g string) error  { return c.Clients.Group(g).Send(c, "m") }

// TestGroupLimits: a connection joins at most MaxGroupsPerConnection
// groups (joining one it is in, or after leaving one, still works), and a
// group name longer than MaxGroupNameBytes is refused for changes and
// sends, each with an error naming the limit. (5,000 groups with 32 KB
// names grew a node by 675 MB and Redis by 157 MB before.)
func TestGroupLimits(t *testing.T) {
	tn := startNode(t, hub.Config{MaxGroupsPerConnection: 3, MaxGroupNameBytes: 16}, map[string]any{"g": grouper{}})
	c, _, err := dialRaw(t, tn.url, "g", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	n := 0
	call := func(target, group, wantErr string) {
		t.Helper()
		n++
		id := fmt.Sprint(n)
		c.send(&protocol.Invocation{InvocationID: id, Target: target, Arguments: []any{group}})
		comp, ok := c.next().(*protocol.Completion)
		if !ok || comp.InvocationID != id {
			t.Fatalf("%s(%q): got %+v", target, group, comp)
		}
		if (wantErr == "") != (comp.Error == "") || !strings.Contains(comp.Error, wantErr) {
			t.Fatalf("%s(%q): error %q, want %q", target, group, comp.Error, wantErr)
		}
	}
	call("Join", "a", "")
	call("Join", "b", "")
	call("Join", "c", "")
	call("Join", "a", "")
	call("Join", "d", "is in 3 groups and the limit is 3 (MaxGroupsPerConnection)")
	call("Leave", "b", "")
	call("Join", "d", "")
	long := strings.Repeat("x", 17)
	call("Join", long, "the group name is 17 bytes and the limit is 16 (MaxGroupNameBytes)")
	call("Leave", long, "the group name is 17 bytes and the limit is 16 (MaxGroupNameBytes)")
	call("Send", long, "the group name is 17 bytes and the limit is 16 (MaxGroupNameBytes)")
	call("Send", strings.Repeat("x", 16), "")
}

// recorder keeps every log record it is given; safe for concurrent use.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
}

type recorderHandler struct {
	r     *recorder
	attrs []slog.Attr
}

func (h recorderHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recorderHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.r.mu.Lock()
	h.r.records = append(h.r.records, r)
	h.r.mu.Unlock()
	return nil
}
func (h recorderHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return recorderHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), a...)}
}
func (h recorderHandler) WithGroup(string) slog.Handler { return h }

// find returns the attributes of the records with message msg.
func (r *recorder) find(msg string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range r.records {
		if rec.Message != msg {
			continue
		}
		m := map[string]string{"level": rec.Level.String()}
		rec.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
		out = append(out, m)
	}
	return out
}

// loud counts the records at Info or above.
func (r *recorder) loud() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if rec.Level >= slog.LevelInfo {
			n++
		}
	}
	return n
}

// failer fails every call.
type failer struct{}

func (failer) Echo(_ *hub.Context, s string) string { return s }
func (failer) Fail(*hub.Context) error              { return errors.New("internal detail") }
func (failer) WhoAmI(c *hub.Context) string         { return c.ConnectionID }

// TestConnectionLogs: connects, disconnects (with the reason) and failed
// hub calls are logged at debug with the connection id, user id and hub;
// nothing at Info or above repeats per message.
func TestConnectionLogs(t *testing.T) {
	rec := &recorder{}
	tn := startNode(t, hub.Config{Logger: slog.New(recorderHandler{r: rec})}, map[string]any{"chat": failer{}})
	c, _, err := dialRaw(t, tn.url, "chat", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	echoRoundTrip(t, c, "0")
	before := rec.loud()
	for i := 1; i <= 100; i++ {
		echoRoundTrip(t, c, fmt.Sprint(i))
		c.send(&protocol.Invocation{InvocationID: "f", Target: "Fail"})
		c.next()
		c.send(&protocol.Invocation{InvocationID: "x", Target: "Missing"})
		c.next()
	}
	if after := rec.loud(); after != before {
		t.Errorf("%d records at Info or above during 300 calls, want none", after-before)
	}
	id := callWhoami(t, c)
	_ = c.ws.CloseNow()
	if err := tn.node.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	check := func(msg string, n int, extra map[string]string) {
		t.Helper()
		got := rec.find(msg)
		if len(got) < n {
			t.Fatalf("%d %q records, want %d: %v", len(got), msg, n, got)
		}
		want := map[string]string{"level": "DEBUG", "hub": "chat", "conn_id": id, "user_id": ""}
		for k, v := range extra {
			want[k] = v
		}
		for k, v := range want {
			if got[0][k] != v {
				t.Errorf("%q record %s = %q, want %q (record %v)", msg, k, got[0][k], v, got[0])
			}
		}
	}
	check("connected", 1, nil)
	check("hub call failed", 200, map[string]string{"method": "Fail"})
	check("disconnected", 1, nil)
	if r := rec.find("disconnected"); r[0]["reason"] == "" {
		t.Errorf("disconnected record without a reason: %v", r[0])
	}
}

// gated is a hub whose calls wait for the test.
type gated struct {
	open   chan struct{} // Block returns once it is closed
	linger chan struct{} // Linger's producer ends, after a cancel, once it is closed
}

func (g gated) Block(*hub.Context) { <-g.open }

func (gated) Keep(_ *hub.Context, xs <-chan int) int {
	n := 0
	for range xs {
		n++
	}
	return n
}

// Linger streams nothing; cancelled, its producer waits for the test.
func (g gated) Linger(c *hub.Context) <-chan int {
	return hub.Produce(c, func(func(int) bool) error {
		<-c.Done()
		<-g.linger
		return nil
	})
}

// MyErr is an error type whose methods use their receiver.
type MyErr struct{ msg string }

func (e *MyErr) Error() string { return e.msg }
func (e *MyErr) Unwrap() error { return errors.New(e.msg) }

// TypedNil returns a nil *MyErr as an error: a non-nil error whose methods
// panic.
func (gated) TypedNil(*hub.Context) error {
	var e *MyErr
	return e
}

// TestUploadsOfAWaitingCallAreBounded: the upload streams an invocation
// declares are registered as soon as it is read (so items sent while it
// waits are kept), and counted against MaxStreamsPerConnection then: an
// invocation that would pass the bound is refused at once, while the call
// before it still runs, and buffers nothing. (One waiting invocation with
// 6,000 stream ids could buffer about 1.9 GB before.)
func TestUploadsOfAWaitingCallAreBounded(t *testing.T) {
	g := gated{open: make(chan struct{}), linger: make(chan struct{})}
	tn := startNode(t, hub.Config{MaxStreamsPerConnection: 2}, map[string]any{"g": g})
	c, _, err := dialRaw(t, tn.url, "g", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	c.send(&protocol.Invocation{InvocationID: "b", Target: "Block"})
	c.send(&protocol.Invocation{InvocationID: "k", Target: "Keep", StreamIDs: []string{"1", "2", "3"}})
	for _, id := range []string{"1", "2", "3"} {
		c.send(&protocol.StreamItem{InvocationID: id, Item: 1})
	}
	comp, ok := c.next().(*protocol.Completion)
	want := "0 upload streams are open and 3 more would pass the limit of 2 (MaxStreamsPerConnection)"
	if !ok || comp.InvocationID != "k" || !strings.Contains(comp.Error, want) {
		t.Fatalf("first message %+v, want k refused with %q while b runs", comp, want)
	}
	close(g.open)
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "b" {
		t.Fatalf("got %+v, want b's Completion", comp)
	}
	c.send(&protocol.Invocation{InvocationID: "k2", Target: "Keep", StreamIDs: []string{"4"}})
	c.send(&protocol.StreamItem{InvocationID: "4", Item: 1})
	c.send(&protocol.Completion{InvocationID: "4"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "k2" || comp.Error != "" {
		t.Fatalf("got %+v, want k2 run within the bound", comp)
	}
}

// TestCancelledStreamHoldsItsPlaceUntilItsProducerEnds: a cancelled
// stream's Completion, which frees its place under MaxStreamsPerConnection,
// is sent only once its Produce goroutine has returned; so a client that
// starts and cancels streams in a loop cannot have more producers running
// than the bound. Before, the Completion went first: the next stream was
// let in while the cancelled producer still ran.
func TestCancelledStreamHoldsItsPlaceUntilItsProducerEnds(t *testing.T) {
	g := gated{open: make(chan struct{}), linger: make(chan struct{})}
	tn := startNode(t, hub.Config{MaxStreamsPerConnection: 1, MaxParallelInvocations: 2}, map[string]any{"g": g})
	c, _, err := dialRaw(t, tn.url, "g", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	c.send(&protocol.StreamInvocation{InvocationID: "s1", Target: "Linger"})
	c.send(&protocol.CancelInvocation{InvocationID: "s1"})
	c.send(&protocol.StreamInvocation{InvocationID: "s2", Target: "Linger"})
	comp, ok := c.next().(*protocol.Completion)
	if !ok || comp.InvocationID != "s2" || !strings.Contains(comp.Error, "the limit is 1") {
		t.Fatalf("first message %+v, want s2 refused while s1's producer lingers", comp)
	}
	close(g.linger)
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "s1" || comp.Error != "" {
		t.Fatalf("got %+v, want s1's Completion once its producer ended", comp)
	}
}

// TestInvocationIDReusedWhileTheOldCallEnds: an id is the client's again
// once its call's Completion was sent; a second reuse while the first
// reuse waits is refused, even after the old call's end arrives. (The old
// call's end freed the id of the waiting reuse before.)
func TestInvocationIDReusedWhileTheOldCallEnds(t *testing.T) {
	g := gated{open: make(chan struct{}), linger: make(chan struct{})}
	close(g.linger)
	tn := startNode(t, hub.Config{}, map[string]any{"g": g})
	c, _, err := dialRaw(t, tn.url, "g", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	c.send(&protocol.StreamInvocation{InvocationID: "x", Target: "Linger"})
	c.send(&protocol.CancelInvocation{InvocationID: "x"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "x" || comp.Error != "" {
		t.Fatalf("got %+v, want x cancelled", comp)
	}
	c.send(&protocol.Invocation{InvocationID: "b", Target: "Block"}) // holds the one slot
	c.send(&protocol.StreamInvocation{InvocationID: "x", Target: "Linger"})
	c.send(&protocol.StreamInvocation{InvocationID: "x", Target: "Linger"})
	comp, ok := c.next().(*protocol.Completion)
	if !ok || comp.InvocationID != "x" || comp.Error != "Invocation ID 'x' is already in use." {
		t.Fatalf("got %+v, want the third x refused", comp)
	}
	close(g.open)
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "b" {
		t.Fatalf("got %+v, want b's Completion", comp)
	}
	c.send(&protocol.CancelInvocation{InvocationID: "x"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "x" || comp.Error != "" {
		t.Fatalf("got %+v, want the second x run and cancelled", comp)
	}
}

// TestErrorValueThatPanicsIsCaught: a method returning a typed-nil error
// (whose Error and Unwrap dereference nil) gets a generic error Completion;
// making the error's text crashed the process before.
func TestErrorValueThatPanicsIsCaught(t *testing.T) {
	g := gated{open: make(chan struct{}), linger: make(chan struct{})}
	tn := startNode(t, hub.Config{}, map[string]any{"g": g})
	c, _, err := dialRaw(t, tn.url, "g", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	c.send(&protocol.Invocation{InvocationID: "1", Target: "TypedNil"})
	comp, ok := c.next().(*protocol.Completion)
	if !ok || comp.Error != "An unexpected error occurred invoking 'TypedNil' on the server." {
		t.Fatalf("got %+v, want a generic error", comp)
	}
	close(g.open)
	c.send(&protocol.Invocation{InvocationID: "2", Target: "Block"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "2" || comp.Error != "" {
		t.Fatalf("got %+v after the panicking error", comp)
	}
}

// TestCancelOfAWaitingCall: a stream the client cancels while it still
// waits for a slot never runs and is answered with a Completion at once.
// The cancel was dropped before (only running calls were looked up), so
// the stream started later and ran until the connection closed.
func TestCancelOfAWaitingCall(t *testing.T) {
	g := gated{open: make(chan struct{}), linger: make(chan struct{})}
	close(g.linger)
	tn := startNode(t, hub.Config{}, map[string]any{"g": g})
	c, _, err := dialRaw(t, tn.url, "g", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	c.send(&protocol.Invocation{InvocationID: "b", Target: "Block"}) // holds the one slot
	c.send(&protocol.StreamInvocation{InvocationID: "s", Target: "Linger"})
	c.send(&protocol.CancelInvocation{InvocationID: "s"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "s" || comp.Error != "" {
		t.Fatalf("first message %+v, want s ended while b still runs", comp)
	}
	close(g.open)
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "b" {
		t.Fatalf("got %+v, want b's Completion", comp)
	}
	// The id is free again.
	c.send(&protocol.StreamInvocation{InvocationID: "s", Target: "Linger"})
	c.send(&protocol.CancelInvocation{InvocationID: "s"})
	if comp, ok := c.next().(*protocol.Completion); !ok || comp.InvocationID != "s" || comp.Error != "" {
		t.Fatalf("got %+v, want the reused id run and cancelled", comp)
	}
}
