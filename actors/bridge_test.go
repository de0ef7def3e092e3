package actors

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// TestRemoteGroupCommand: a group change requested on node A for a
// connection of node B is applied on B, by B's group actor, and answered
// on A once it is in effect: then group sends made on B and on A reach the
// connection; after a remote remove they no longer do.
func TestRemoteGroupCommand(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	bus := backplane.NewMemoryBus()
	a := startNode(t, sys, "A", bus.NewBackplane(), nil)
	b := startNode(t, sys, "B", bus.NewBackplane(), nil)
	a1 := a.connect("a1", "", protocol.JSON)
	b1 := b.connect("b1", "", protocol.MessagePack)
	g := Route{Kind: RouteGroup, Name: "g"}

	a.mustGroup(GroupAdd, "b1", "g")
	b.mustSend(g, "fromB") // local to B: queued before the answer
	checkRecords(t, b1.out, "fromB")
	a.mustSend(g, "fromA")
	b1.out.waitRecords(t, 2)

	a.mustGroup(GroupRemove, "b1", "g")
	b.mustSend(g, "afterRemove")
	checkRecords(t, b1.out, "fromB", "fromA")
	checkRecords(t, a1.out)
}

// TestGroupRequestUnknownConnection: a group change for a connection that
// no node has fails with an error wrapping ErrUnknownConnection that names
// the connection: at once when the backplane knows that nobody listens on
// the connection's channel (a private Memory, or a MemoryBus whose other
// node does not have it), after GroupAckTimeout when it cannot know
// (a backplane without Audience, as Redis).
func TestGroupRequestUnknownConnection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		action     GroupAction
		nodes      func(t *testing.T, ackTimeout time.Duration) *testNode // returns the node asked
		ackTimeout time.Duration
		waits      bool // for the ack timeout
	}{
		{name: "private memory add", action: GroupAdd, nodes: privateNode, ackTimeout: 10 * time.Second},
		{name: "private memory remove", action: GroupRemove, nodes: privateNode, ackTimeout: 10 * time.Second},
		{name: "bus with audience", action: GroupAdd, nodes: twoNodes(false), ackTimeout: 10 * time.Second},
		{name: "bus without audience", action: GroupAdd, nodes: twoNodes(true), ackTimeout: 300 * time.Millisecond, waits: true},
		{name: "bus without audience remove", action: GroupRemove, nodes: twoNodes(true), ackTimeout: 300 * time.Millisecond, waits: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := tt.nodes(t, tt.ackTimeout)
			start := time.Now()
			resp := n.group(tt.action, "ghost-42", "g")
			elapsed := time.Since(start)
			if !errors.Is(resp.Err, ErrUnknownConnection) {
				t.Fatalf("answer %v, want an error wrapping ErrUnknownConnection", resp.Err)
			}
			if !strings.Contains(resp.Err.Error(), "ghost-42") {
				t.Errorf("error %q does not name the connection", resp.Err)
			}
			if tt.waits && elapsed < tt.ackTimeout {
				t.Errorf("answered after %s, before the ack timeout %s", elapsed, tt.ackTimeout)
			}
			if !tt.waits && elapsed >= tt.ackTimeout {
				t.Errorf("answered after %s, want at once", elapsed)
			}
		})
	}
}

// privateNode is one node on a private Memory.
func privateNode(t *testing.T, ackTimeout time.Duration) *testNode {
	return startNode(t, newTestSystem(t), "A", backplane.NewMemory(), withAckTimeout(ackTimeout))
}

func withAckTimeout(d time.Duration) func(*fabric.NodeConfig) {
	return func(c *fabric.NodeConfig) { c.GroupAckTimeout = d }
}

// twoNodes returns a builder of nodes A and B on one MemoryBus, each with a
// connection; A's backplane hides its Audience if blind. It returns A.
func twoNodes(blind bool) func(t *testing.T, ackTimeout time.Duration) *testNode {
	return func(t *testing.T, ackTimeout time.Duration) *testNode {
		sys := newTestSystem(t)
		bus := backplane.NewMemoryBus()
		var bpA backplane.Backplane = bus.NewBackplane()
		if blind {
			bpA = blindBackplane{bpA}
		}
		a := startNode(t, sys, "A", bpA, withAckTimeout(ackTimeout))
		b := startNode(t, sys, "B", bus.NewBackplane(), withAckTimeout(ackTimeout))
		a.connect("a1", "", protocol.JSON)
		b.connect("b1", "", protocol.JSON)
		return a
	}
}

// TestBridgeFailureIsLoud: while node A's backplane is unavailable, a send
// from A still reaches A's own connections but answers an error that says
// other nodes were not reached (wrapping backplane.ErrUnavailable, without
// the backplane's internal detail), and counts the failed publish; a
// remote group change fails the same way. Once the backplane is back,
// sends reach B again, and B never got the failed one.
func TestBridgeFailureIsLoud(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	bus := backplane.NewMemoryBus()
	bpA := bus.NewBackplane()
	events := make(chan backplane.Event, 16)
	a := startNode(t, sys, "A", bpA, func(c *fabric.NodeConfig) {
		c.OnBackplaneEvent = func(ev backplane.Event) { events <- ev }
	})
	b := startNode(t, sys, "B", bus.NewBackplane(), nil)
	a1 := a.connect("a1", "", protocol.JSON)
	b1 := b.connect("b1", "", protocol.JSON)

	bpA.SetAvailable(false)
	waitEvent(t, events, backplane.EventDown)
	if got := a.cfg.Counters.Down.Load(); got != 1 {
		t.Errorf("Down = %d, want 1", got)
	}

	resp := a.send(Route{Kind: RouteAll}, "m1")
	checkClientSafe(t, "send", resp.Err)
	checkRecords(t, a1.out, "m1")
	if got := a.cfg.Counters.PublishFailed.Load(); got != 1 {
		t.Errorf("PublishFailed = %d, want 1", got)
	}
	if got := a.cfg.Counters.Published.Load(); got != 0 {
		t.Errorf("Published = %d, want 0", got)
	}

	gresp := a.group(GroupAdd, "b1", "g")
	checkClientSafe(t, "group change", gresp.Err)

	bpA.SetAvailable(true)
	waitEvent(t, events, backplane.EventRestored)
	a.mustSend(Route{Kind: RouteAll}, "m2")
	b1.out.waitRecords(t, 1)
	checkRecords(t, b1.out, "m2")
	checkRecords(t, a1.out, "m1", "m2")
}

// checkClientSafe fails unless err wraps ErrNotDeliveredRemotely and
// backplane.ErrUnavailable and its text carries none of the Memory's
// injected cause.
func checkClientSafe(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrNotDeliveredRemotely) || !errors.Is(err, backplane.ErrUnavailable) {
		t.Errorf("%s answered %v, want an error wrapping ErrNotDeliveredRemotely and backplane.ErrUnavailable", what, err)
		return
	}
	for _, detail := range []string{"SetAvailable", "memory:"} {
		if strings.Contains(err.Error(), detail) {
			t.Errorf("%s error %q leaks the backplane's detail %q", what, err, detail)
		}
	}
}

// waitEvent waits until the node's OnBackplaneEvent hook got an event of
// kind, skipping others.
func waitEvent(t *testing.T, events <-chan backplane.Event, kind backplane.EventKind) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case ev := <-events:
			if ev.Kind == kind {
				return
			}
		case <-deadline:
			t.Fatalf("timed out waiting for backplane event %v", kind)
		}
	}
}

// TestHandlerDropsMalformed: the backplane handler counts a message on a
// channel of another form, a payload that is not an envelope or an
// envelope that does not fit its channel as Malformed and delivers
// nothing; a valid send handled after it is delivered alone.
func TestHandlerDropsMalformed(t *testing.T) {
	t.Parallel()
	send := func(t *testing.T) []byte { return invocationEnvelope(t, "other", "bad") }
	env := func(body *fabricv1.Envelope) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			e := proto.CloneOf(body) // shared by parallel subtests
			e.OriginNode = "other"
			return marshalEnvelope(t, e)
		}
	}
	// records is a send from another node whose JSON or MessagePack record
	// (nil: a valid one) is replaced.
	records := func(js, mp []byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			if js == nil {
				js = record(t, protocol.JSON, "bad")
			}
			if mp == nil {
				mp = record(t, protocol.MessagePack, "bad")
			}
			return marshalEnvelope(t, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{Json: js, Messagepack: mp}}})
		}
	}
	command := &fabricv1.Envelope{Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{
		Id: 1, Action: fabricv1.GroupAction_GROUP_ACTION_ADD, Group: "g", ConnectionId: "a",
	}}}
	tests := []struct {
		name         string
		channel      string
		payload      func(t *testing.T) []byte
		wantReceived uint64 // envelopes decoded from other nodes
	}{
		{name: "channel of another form", channel: "bogus", payload: send},
		{name: "hub channel without a route", channel: "h:chat", payload: send},
		{name: "unknown route letter", channel: "h:chat:x:a", payload: send},
		{name: "not an envelope", channel: "h:chat:all", payload: func(*testing.T) []byte { return []byte{0xff, 0xff, 0xff} }},
		{name: "send on a node channel", channel: "n:n1", payload: send, wantReceived: 1},
		{name: "send for an unknown hub", channel: "h:other:all", payload: send, wantReceived: 1},
		{name: "group command on the all channel", channel: "h:chat:all", payload: env(command), wantReceived: 1},
		{name: "group command on another connection's channel", channel: "h:chat:c:b", payload: env(command), wantReceived: 1},
		{name: "group ack on a hub channel", channel: "h:chat:all", payload: env(&fabricv1.Envelope{Body: &fabricv1.Envelope_GroupAck{GroupAck: &fabricv1.GroupAck{Id: 1}}}), wantReceived: 1},
		{name: "envelope without a body", channel: "h:chat:all", payload: env(&fabricv1.Envelope{}), wantReceived: 1},
		{name: "send without a MessagePack record", channel: "h:chat:all", payload: env(&fabricv1.Envelope{Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{Json: []byte("{}\x1e")}}}), wantReceived: 1},
		{name: "send to a group without a name", channel: "h:chat:g:", payload: send, wantReceived: 1},
		{name: "group command without a group", channel: "h:chat:c:a", payload: env(&fabricv1.Envelope{Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{
			Id: 1, Action: fabricv1.GroupAction_GROUP_ACTION_ADD, ConnectionId: "a",
		}}}), wantReceived: 1},
		{name: "group command without an action", channel: "h:chat:c:a", payload: env(&fabricv1.Envelope{Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{
			Id: 1, Group: "g", ConnectionId: "a",
		}}}), wantReceived: 1},
		{name: "group command without a connection", channel: "h:chat:c:", payload: env(&fabricv1.Envelope{Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{
			Id: 1, Action: fabricv1.GroupAction_GROUP_ACTION_ADD, Group: "g",
		}}}), wantReceived: 1},
		// Records: each must be exactly one send-like Invocation.
		{name: "broken JSON record", channel: "h:chat:all", payload: records([]byte(`{"type":1,"target":"x","arguments":["unterminated}`+"\x1e"), nil), wantReceived: 1},
		{name: "JSON record without its separator", channel: "h:chat:all", payload: records([]byte(`{"type":1,"target":"x","arguments":[]}`), nil), wantReceived: 1},
		{name: "JSON Close record", channel: "h:chat:all", payload: records(encode(t, protocol.JSON, &protocol.Close{Error: "forged", AllowReconnect: false}), nil), wantReceived: 1},
		{name: "MessagePack Close record", channel: "h:chat:all", payload: records(nil, encode(t, protocol.MessagePack, &protocol.Close{Error: "forged"})), wantReceived: 1},
		{name: "JSON Completion record", channel: "h:chat:all", payload: records(encode(t, protocol.JSON, &protocol.Completion{InvocationID: "1", Error: "forged"}), nil), wantReceived: 1},
		{name: "MessagePack Completion record", channel: "h:chat:all", payload: records(nil, encode(t, protocol.MessagePack, &protocol.Completion{InvocationID: "1", Result: 1, HasResult: true})), wantReceived: 1},
		{name: "invocation with an invocation id", channel: "h:chat:all", payload: records(encode(t, protocol.JSON, &protocol.Invocation{InvocationID: "7", Target: "x", Arguments: []any{}}), nil), wantReceived: 1},
		{name: "invocation without a target", channel: "h:chat:all", payload: records(nil, encode(t, protocol.MessagePack, &protocol.Invocation{Arguments: []any{}})), wantReceived: 1},
		{name: "invocation with stream ids", channel: "h:chat:all", payload: records(encode(t, protocol.JSON, &protocol.Invocation{Target: "x", Arguments: []any{}, StreamIDs: []string{"s"}}), nil), wantReceived: 1},
		{name: "MessagePack record with trailing garbage", channel: "h:chat:all", payload: records(nil, append(record(t, protocol.MessagePack, "bad"), 0x05, 0x93)), wantReceived: 1},
		{name: "MessagePack record with a byte inside its array too many", channel: "h:chat:all", payload: records(nil, lengthPlusOne(record(t, protocol.MessagePack, "bad"))), wantReceived: 1},
		{name: "two JSON records in one", channel: "h:chat:all", payload: records(append(record(t, protocol.JSON, "bad"), record(t, protocol.JSON, "bad")...), nil), wantReceived: 1},
		{name: "two MessagePack records in one", channel: "h:chat:all", payload: records(nil, append(record(t, protocol.MessagePack, "bad"), record(t, protocol.MessagePack, "bad")...)), wantReceived: 1},
		{name: "empty JSON record", channel: "h:chat:all", payload: records([]byte{}, nil), wantReceived: 1},
		{name: "JSON record with invalid UTF-8", channel: "h:chat:all", payload: records([]byte("{\"type\":1,\"target\":\"x\",\"arguments\":[\"\xff\xfe\"]}\x1e"), nil), wantReceived: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := startNode(t, newTestSystem(t), "n1", backplane.NewMemory(), nil)
			a := n.connect("a", "", protocol.JSON)
			n.tree.Handler.HandleMessage(tt.channel, tt.payload(t))
			if got := n.cfg.Counters.Malformed.Load(); got != 1 {
				t.Errorf("Malformed = %d, want 1", got)
			}
			if got := n.cfg.Counters.Received.Load(); got != tt.wantReceived {
				t.Errorf("Received = %d, want %d", got, tt.wantReceived)
			}
			// The hub gets the marker after anything the handler sent it
			// before, from the same goroutine.
			n.tree.Handler.HandleMessage("h:chat:all", invocationEnvelope(t, "other", "marker"))
			a.out.waitRecords(t, 1)
			checkRecords(t, a.out, "marker")
			if got := n.cfg.Counters.Malformed.Load(); got != 1 {
				t.Errorf("Malformed = %d after a valid message, want still 1", got)
			}
		})
	}
}

// TestHandlerDropsOwnMessages: a message the node itself published
// (OriginNode == NodeID), which its backplane delivers back to it, is
// neither counted nor delivered; the same send from another node is.
func TestHandlerDropsOwnMessages(t *testing.T) {
	t.Parallel()
	n := startNode(t, newTestSystem(t), "n1", backplane.NewMemory(), nil)
	a := n.connect("a", "", protocol.MessagePack)
	n.tree.Handler.HandleMessage("h:chat:all", invocationEnvelope(t, "n1", "own"))
	n.tree.Handler.HandleMessage("h:chat:c:a", invocationEnvelope(t, "n1", "ownToA"))
	n.tree.Handler.HandleMessage("h:chat:all", invocationEnvelope(t, "n2", "other"))
	a.out.waitRecords(t, 1)
	checkRecords(t, a.out, "other")
	if got := n.cfg.Counters.Received.Load(); got != 1 {
		t.Errorf("Received = %d, want 1", got)
	}
	if got := n.cfg.Counters.Malformed.Load(); got != 0 {
		t.Errorf("Malformed = %d, want 0", got)
	}
}

// TestHandlerHonoursExcluded: a send from another node skips the
// connections it excludes.
func TestHandlerHonoursExcluded(t *testing.T) {
	t.Parallel()
	n := startNode(t, newTestSystem(t), "n1", backplane.NewMemory(), nil)
	a := n.connect("a", "", protocol.JSON)
	b := n.connect("b", "", protocol.JSON)
	n.tree.Handler.HandleMessage("h:chat:all", invocationEnvelope(t, "n2", "m1", "a"))
	n.tree.Handler.HandleMessage("h:chat:all", invocationEnvelope(t, "n2", "marker"))
	a.out.waitRecords(t, 1)
	b.out.waitRecords(t, 2)
	checkRecords(t, a.out, "marker")
	checkRecords(t, b.out, "m1", "marker")
}

// TestSubscriptionMadeDuringOutageIsRestored: a connection that connects,
// and a group join made, while the node's backplane is unavailable are
// reachable from other nodes once it is back, as the actors promise ("the
// backplane resubscribes on recovery"). It failed on a Memory backplane
// before Memory kept subscription changes made during an outage, as the
// Redis backplane does (the Backplane contract now says so).
func TestSubscriptionMadeDuringOutageIsRestored(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	bus := backplane.NewMemoryBus()
	bpA := bus.NewBackplane()
	events := make(chan backplane.Event, 16)
	a := startNode(t, sys, "A", bpA, func(c *fabric.NodeConfig) {
		c.OnBackplaneEvent = func(ev backplane.Event) { events <- ev }
	})
	bpB := bus.NewBackplane()
	b := startNode(t, sys, "B", bpB, nil)

	bpA.SetAvailable(false)
	a1 := a.connect("a1", "", protocol.JSON) // answered: reachable locally
	a.mustGroup(GroupAdd, "a1", "g")         // answered: the join holds locally
	bpA.SetAvailable(true)
	waitEvent(t, events, backplane.EventRestored)

	for _, r := range []Route{{Kind: RouteConnection, Name: "a1"}, {Kind: RouteGroup, Name: "g"}} {
		if ch := routeChannel("chat", r); !bpB.OthersSubscribed(ch) {
			t.Errorf("after the outage node A is not subscribed to %s", ch)
		}
	}
	b.mustSend(Route{Kind: RouteConnection, Name: "a1"}, "toConn")
	b.mustSend(Route{Kind: RouteGroup, Name: "g"}, "toGroup")
	if got := b.cfg.Counters.Published.Load(); got != 2 {
		t.Fatalf("B published %d of its 2 sends: it found no node listening for a1 and g", got)
	}
	a1.out.waitRecords(t, 2)
	checkRecords(t, a1.out, "toConn", "toGroup")
}

// FuzzHandleMessage feeds the backplane handler (the decoder of what other
// nodes publish) any channel name and payload: it must never panic, and
// the node must still deliver a valid send afterwards.
func FuzzHandleMessage(f *testing.F) {
	f.Add("h:chat:all", invocationEnvelope(f, "other", "m"))
	f.Add("h:chat:g:g", invocationEnvelope(f, "other", "m", "a"))
	f.Add("h:chat:c:a", marshalEnvelope(f, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{
		Id: 1, Action: fabricv1.GroupAction_GROUP_ACTION_ADD, Group: "g", ConnectionId: "a",
	}}}))
	f.Add("n:n1", marshalEnvelope(f, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_GroupAck{GroupAck: &fabricv1.GroupAck{Id: 7, Error: "x"}}}))
	f.Add("h:chat:u:", []byte{0x0a, 0x00, 0x12})
	// Client results: an invocation for a, its cancel, an ack and results.
	ci, err := NewClientInvokeRequest("a", "r1", "add", 1, 2)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("h:chat:c:a", marshalEnvelope(f, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientInvoke{ClientInvoke: &fabricv1.ClientInvoke{
		Id: 1, ConnectionId: "a", InvocationId: "r1", Json: ci.payload.json, Messagepack: ci.payload.msgpack,
	}}}))
	f.Add("h:chat:c:a", marshalEnvelope(f, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientInvokeCancel{ClientInvokeCancel: &fabricv1.ClientInvokeCancel{Id: 1, ConnectionId: "a", InvocationId: "r1"}}}))
	f.Add("n:n1", marshalEnvelope(f, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientInvokeAck{ClientInvokeAck: &fabricv1.ClientInvokeAck{Id: 1}}}))
	f.Add("n:n1", marshalEnvelope(f, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientResult{ClientResult: &fabricv1.ClientResult{Id: 1, Protocol: "json", HasResult: true, Result: []byte("3")}}}))
	f.Add("n:n1", marshalEnvelope(f, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientResult{ClientResult: &fabricv1.ClientResult{Id: 1, Protocol: "messagepack", Error: "x", ClientError: true}}}))
	n := startNode(f, newTestSystem(f), "n1", backplane.NewMemory(), nil)
	a := n.connect("a", "", protocol.JSON)
	f.Fuzz(func(t *testing.T, channel string, data []byte) {
		n.tree.Handler.HandleMessage(channel, data)
	})
	// Still serving: a valid send from another node reaches the connection.
	n.tree.Handler.HandleMessage("h:chat:c:a", invocationEnvelope(f, "other", "after"))
	a.out.waitUntil(f, "the send made after the fuzz inputs", func() bool {
		for _, r := range a.out.records {
			if bytes.Contains(r, []byte(`"after"`)) {
				return true
			}
		}
		return false
	})
}

// encode returns the framed record of m in p.
func encode(t testing.TB, p protocol.HubProtocol, m protocol.Message) []byte {
	t.Helper()
	b, err := p.AppendMessage(nil, m)
	if err != nil {
		t.Fatalf("encode %T: %v", m, err)
	}
	return b
}

// lengthPlusOne returns a short MessagePack record (a one-byte length
// prefix) with one more byte inside its frame, after the array.
func lengthPlusOne(rec []byte) []byte {
	out := append([]byte{rec[0] + 1}, rec[1:]...)
	return append(out, 0xc0)
}

// FuzzHandleRecords wraps any pair of records in a well-formed send from
// another node: whatever reaches a connection (JSON and MessagePack alike)
// must be exactly one Invocation with a target and neither an invocation
// id nor stream ids (and JSON must be UTF-8, as text frames must);
// everything else is dropped and counted as Malformed.
func FuzzHandleRecords(f *testing.F) {
	valid := func(p protocol.HubProtocol) []byte { return record(f, p, "m", "alice", 1.5, []any{true, nil}) }
	f.Add(valid(protocol.JSON), valid(protocol.MessagePack))
	f.Add([]byte(`{"type":1,"target":"x","arguments":["unterminated}`+"\x1e"), valid(protocol.MessagePack))
	f.Add(encode(f, protocol.JSON, &protocol.Close{Error: "forged"}), encode(f, protocol.MessagePack, &protocol.Close{Error: "forged"}))
	f.Add(encode(f, protocol.JSON, &protocol.Completion{InvocationID: "1"}), encode(f, protocol.MessagePack, &protocol.Completion{InvocationID: "1"}))
	f.Add(valid(protocol.JSON), append(valid(protocol.MessagePack), 0x01))
	f.Add(append(valid(protocol.JSON), valid(protocol.JSON)...), append(valid(protocol.MessagePack), valid(protocol.MessagePack)...))
	n := startNode(f, newTestSystem(f), "n1", backplane.NewMemory(), nil)
	outs := []*fakeOutlet{n.connect("j", "", protocol.JSON).out, n.connect("m", "", protocol.MessagePack).out}
	marker := invocationEnvelope(f, "other", "marker")
	f.Fuzz(func(t *testing.T, js, mp []byte) {
		malformed := n.cfg.Counters.Malformed.Load()
		n.tree.Handler.HandleMessage("h:chat:all", marshalEnvelope(t, &fabricv1.Envelope{OriginNode: "other",
			Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{Json: js, Messagepack: mp}}}))
		n.tree.Handler.HandleMessage("h:chat:all", marker) // reaches each outlet after the input, if delivered
		delivered := false
		for _, o := range outs {
			recs := o.waitRecords(t, 1)
			for ; !bytes.Equal(recs[len(recs)-1], record(t, o.protocol, "marker")); recs = o.recordsNow() {
				o.waitRecords(t, len(recs)+1)
			}
			o.update(func() { o.records = nil })
			for _, rec := range recs[:len(recs)-1] {
				delivered = true
				msgs, used, err := o.protocol.ParseMessages(rec, 0)
				inv, ok := (*protocol.Invocation)(nil), len(msgs) == 1
				if ok {
					inv, ok = msgs[0].(*protocol.Invocation)
				}
				if err != nil || used != len(rec) || !ok || inv.Target == "" || inv.InvocationID != "" || len(inv.StreamIDs) != 0 ||
					(o.protocol == protocol.JSON && !utf8.Valid(rec)) {
					t.Fatalf("%s got record %q: not one send-like invocation (err %v, %d of %d bytes, %d messages)", o.protocol.Name(), rec, err, used, len(rec), len(msgs))
				}
			}
		}
		if dropped := n.cfg.Counters.Malformed.Load() != malformed; dropped == delivered {
			t.Fatalf("delivered %v, counted as malformed %v: want exactly one", delivered, dropped)
		}
	})
}

// recordingHandler is a slog.Handler keeping every record; safe for
// concurrent use.
type recordingHandler struct {
	mu      *sync.Mutex
	records *[]slog.Record
}

func (recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.records = append(*h.records, r)
	return nil
}
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordingHandler) WithGroup(string) slog.Handler      { return h }

// TestHandlerLogsDropsAtDebug: every dropped message is one Debug line
// saying why; none is logged at Info or above, so a node fed garbage does
// not flood its log.
func TestHandlerLogsDropsAtDebug(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var records []slog.Record
	n := startNode(t, newTestSystem(t), "n1", backplane.NewMemory(), func(c *fabric.NodeConfig) {
		c.Logger = slog.New(recordingHandler{&mu, &records})
	})
	broken := marshalEnvelope(t, &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{
		Json: []byte(`{"type":7}` + "\x1e"), Messagepack: record(t, protocol.MessagePack, "m"),
	}}})
	for _, m := range []struct {
		channel string
		data    []byte
	}{{"bogus", nil}, {"h:chat:all", []byte{0xff, 0xff}}, {"h:chat:all", broken}} {
		n.tree.Handler.HandleMessage(m.channel, m.data)
	}
	mu.Lock()
	defer mu.Unlock()
	debug := 0
	for _, r := range records {
		if !strings.Contains(r.Message, "malformed backplane message") && !strings.Contains(r.Message, "not an envelope") {
			continue
		}
		if r.Level != slog.LevelDebug {
			t.Errorf("drop logged at %v: %q", r.Level, r.Message)
		}
		debug++
	}
	if debug != 3 {
		t.Errorf("%d drop lines for 3 dropped messages", debug)
	}
}
