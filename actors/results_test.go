package actors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/backplane"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// TestClientResultEnvelopesChecked sends the backplane handler client-result
// envelopes that do not fit their channel or carry broken records: each is
// dropped and counted as malformed, and none reaches the connection.
func TestClientResultEnvelopesChecked(t *testing.T) {
	n := startNode(t, newTestSystem(t), "n1", backplane.NewMemory(), nil)
	n.connect("a", "", protocol.JSON)
	good, err := NewClientInvokeRequest("a", "r1", "add", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	send, err := NewSendRequest(Route{Kind: RouteAll}, "add", 1, 2) // no invocation id
	if err != nil {
		t.Fatal(err)
	}
	invoke := func(conn, id string, js, mp []byte) *fabricv1.Envelope {
		return &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientInvoke{ClientInvoke: &fabricv1.ClientInvoke{
			Id: 1, ConnectionId: conn, InvocationId: id, Json: js, Messagepack: mp,
		}}}
	}
	result := func(r *fabricv1.ClientResult) *fabricv1.Envelope {
		return &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientResult{ClientResult: r}}
	}
	for _, tc := range []struct {
		name, channel string
		env           *fabricv1.Envelope
	}{
		{"invoke on a node channel", "n:n1", invoke("a", "r1", good.payload.json, good.payload.msgpack)},
		{"invoke for another connection's channel", "h:chat:c:b", invoke("a", "r1", good.payload.json, good.payload.msgpack)},
		{"invoke without an invocation id", "h:chat:c:a", invoke("a", "", good.payload.json, good.payload.msgpack)},
		{"invoke whose records carry another id", "h:chat:c:a", invoke("a", "r2", good.payload.json, good.payload.msgpack)},
		{"invoke whose records have no id", "h:chat:c:a", invoke("a", "r1", send.payload.json, send.payload.msgpack)},
		{"invoke without a MessagePack record", "h:chat:c:a", invoke("a", "r1", good.payload.json, nil)},
		{"invoke with two JSON records", "h:chat:c:a", invoke("a", "r1", append(append([]byte{}, good.payload.json...), good.payload.json...), good.payload.msgpack)},
		{"result on a hub channel", "h:chat:all", result(&fabricv1.ClientResult{Id: 1, Protocol: "json"})},
		{"result of an unknown protocol", "n:n1", result(&fabricv1.ClientResult{Id: 1, Protocol: "xml"})},
		{"result that is not a JSON value", "n:n1", result(&fabricv1.ClientResult{Id: 1, Protocol: "json", HasResult: true, Result: []byte("{")})},
		{"result with a value and an error", "n:n1", result(&fabricv1.ClientResult{Id: 1, Protocol: "json", HasResult: true, Result: []byte("1"), Error: "x"})},
		{"ack on a hub channel", "h:chat:c:a", &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientInvokeAck{ClientInvokeAck: &fabricv1.ClientInvokeAck{Id: 1}}}},
		{"cancel on a node channel", "n:n1", &fabricv1.Envelope{OriginNode: "other", Body: &fabricv1.Envelope_ClientInvokeCancel{ClientInvokeCancel: &fabricv1.ClientInvokeCancel{Id: 1, ConnectionId: "a", InvocationId: "r1"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := n.cfg.Counters.Malformed.Load()
			n.tree.Handler.HandleMessage(tc.channel, marshalEnvelope(t, tc.env))
			if got := n.cfg.Counters.Malformed.Load(); got != before+1 {
				t.Fatalf("malformed count %d -> %d, want one more", before, got)
			}
		})
	}
	// The well-formed one passes the check (reaches the bridge, not counted).
	before := n.cfg.Counters.Malformed.Load()
	n.tree.Handler.HandleMessage("h:chat:c:a", marshalEnvelope(t, invoke("a", "r1", good.payload.json, good.payload.msgpack)))
	if got := n.cfg.Counters.Malformed.Load(); got != before {
		t.Fatalf("a well-formed client invocation was counted as malformed")
	}
}

// TestClientInvokeCancelReachesTheOwner: a caller that stops waiting for a connection of another
// node is answered with context.Canceled, and the owner forgets the invocation: the same id can
// be used again (not "already waiting"), and the client's answer to it completes the new call.
// The same holds on one node, and a connection that closes fails what waits with
// ErrClientDisconnected.
func TestClientInvokeCancelReachesTheOwner(t *testing.T) {
	bus := backplane.NewMemoryBus()
	n1 := startNode(t, newTestSystem(t), "n1", bus.NewBackplane(), nil)
	n2 := startNode(t, newTestSystem(t), "n2", bus.NewBackplane(), nil)
	a := n2.connect("a", "", protocol.JSON)
	local := n1.connect("l", "", protocol.JSON)
	ask := func(n *testNode, conn, id string) *actor.Future {
		req, err := NewClientInvokeRequest(conn, id, "add", 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		return n.root.RequestFuture(n.hub, req, 10*time.Second)
	}
	answer := func(f *actor.Future) *ClientInvokeResponse {
		t.Helper()
		res, err := f.Result()
		if err != nil {
			t.Fatal(err)
		}
		r, ok := res.(*ClientInvokeResponse)
		if !ok {
			t.Fatalf("answer %T", res)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		c    *testConn
	}{{"other node", a}, {"same node", local}} {
		t.Run(tc.name, func(t *testing.T) {
			f := ask(n1, tc.c.id, "r-"+tc.name)
			tc.c.out.waitRecords(t, 1)
			n1.root.Send(n1.hub, &ClientInvokeCancel{ConnectionID: tc.c.id, InvocationID: "r-" + tc.name})
			if r := answer(f); !errors.Is(r.Err, context.Canceled) {
				t.Fatalf("cancelled call: %v", r.Err)
			}
			f = ask(n1, tc.c.id, "r-"+tc.name)
			tc.c.out.waitRecords(t, 2)
			tc.c.in.Receive(&protocol.Completion{InvocationID: "r-" + tc.name, Result: protocol.RawValue("3"), HasResult: true})
			if r := answer(f); r.Err != nil || string(r.Result) != "3" {
				t.Fatalf("the same id again: %q, %v; want 3 (the owner still held the cancelled one?)", r.Result, r.Err)
			}
			f = ask(n1, tc.c.id, "r2-"+tc.name)
			tc.c.out.waitRecords(t, 3)
			tc.c.close()
			if r := answer(f); !errors.Is(r.Err, ErrClientDisconnected) {
				t.Fatalf("connection closed while waiting: %v", r.Err)
			}
		})
	}
}
