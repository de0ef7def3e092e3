package hub_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// statefulHub records what its clients invoke and reports disconnects.
type statefulHub struct {
	mu    sync.Mutex
	order []int
	gone  chan error
}

func (h *statefulHub) OnDisconnected(_ *hub.Context, err error) { h.gone <- err }

// Record appends n (calls run one at a time, so in arrival order).
func (h *statefulHub) Record(_ *hub.Context, n int) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.order = append(h.order, n)
	return n, nil
}

func (h *statefulHub) recorded() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.order)
}

// negotiateQuery POSTs negotiate with query and returns the response.
func negotiateQuery(t testing.TB, base, query string) protocol.NegotiateResponse {
	t.Helper()
	resp, err := http.Post(base+"s/negotiate?"+query, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	nr, err := protocol.ParseNegotiateResponse(body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("negotiate %q: %d %q %v", query, resp.StatusCode, body, err)
	}
	return nr
}

// TestStatefulNegotiate: useStatefulReconnect is answered only when the client asks and the
// node allows it.
func TestStatefulNegotiate(t *testing.T) {
	on := startNode(t, hub.Config{StatefulReconnect: true}, map[string]any{"s": &statefulHub{}})
	off := startNode(t, hub.Config{}, map[string]any{"s": &statefulHub{}})
	for _, tc := range []struct {
		node  *testNode
		query string
		want  bool
	}{
		{on, "negotiateVersion=1&useStatefulReconnect=true", true},
		{on, "negotiateVersion=1", false},
		{on, "negotiateVersion=0&useStatefulReconnect=true", false},
		{off, "negotiateVersion=1&useStatefulReconnect=true", false},
	} {
		if got := negotiateQuery(t, tc.node.url, tc.query).UseStatefulReconnect; got != tc.want {
			t.Errorf("node allowing %v, %q: useStatefulReconnect %v, want %v", tc.node == on, tc.query, got, tc.want)
		}
	}
}

// dialStateful negotiates stateful reconnect, connects with a version 2 handshake and returns
// the connection and its token.
func dialStateful(t testing.TB, tn *testNode, p protocol.HubProtocol) (*rawConn, string, string) {
	t.Helper()
	nr := negotiateQuery(t, tn.url, "negotiateVersion=1&useStatefulReconnect=true")
	if !nr.UseStatefulReconnect {
		t.Fatal("stateful reconnect not granted")
	}
	c, _, err := dialRaw(t, tn.url, "s", "id="+nr.ConnectionToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.proto = p
	c.writeText(string(protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: p.Name(), Version: 2})))
	if resp := c.handshakeResponse(); resp.Error != "" {
		t.Fatalf("handshake refused: %s", resp.Error)
	}
	return c, nr.ConnectionToken, nr.ConnectionID
}

// reattach opens a new WebSocket with token (no handshake, as the official
// clients do), dialling again while tn answers 409: a node lets a dropped
// socket's token go only once it has noticed the drop, which a loaded
// machine may delay past the client's reconnect (a SignalR client retries
// too). Bounded by 10 s.
func reattach(t testing.TB, tn *testNode, p protocol.HubProtocol, token string) *rawConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, resp, err := dialRaw(t, tn.url, "s", "id="+token, nil)
		if err == nil {
			c.proto = p
			return c
		}
		if resp == nil || resp.StatusCode != http.StatusConflict || time.Now().After(deadline) {
			t.Fatalf("reattach: %v", err)
		}
	}
}

// describe renders the messages a client reads, Pings and Acks skipped.
func describe(t *testing.T, c *rawConn, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		switch m := c.next().(type) {
		case *protocol.Ack:
		case *protocol.Sequence:
			out = append(out, fmt.Sprintf("seq%d", m.SequenceID))
		case *protocol.Invocation:
			var s string
			c.bind(m.Arguments[0], &s)
			out = append(out, m.Target+":"+s)
		case *protocol.Completion:
			var v int
			c.bind(m.Result, &v)
			out = append(out, fmt.Sprintf("done%s=%d", m.InvocationID, v))
		default:
			out = append(out, fmt.Sprintf("%T", m))
		}
	}
	return out
}

// TestStatefulResume drops a stateful connection's socket (no close frame, no Close message),
// sends to it while it has none, and reconnects with the same token: the node sends Sequence,
// then everything the client has not acknowledged, in order; what the client acknowledged is
// not resent; the client's resent invocations run once. A socket that does not come back
// within the window ends the connection (OnDisconnected runs).
func TestStatefulResume(t *testing.T) {
	for _, p := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
		t.Run(p.Name(), func(t *testing.T) {
			h := &statefulHub{gone: make(chan error, 1)}
			tn := startNode(t, hub.Config{StatefulReconnect: true, StatefulReconnectWindow: 2 * time.Second}, map[string]any{"s": h})
			hc, err := tn.node.HubContext("s")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			send := func(id, s string) {
				t.Helper()
				if err := hc.Clients.Client(id).Send(ctx, "got", s); err != nil {
					t.Fatal(err)
				}
			}

			c, token, id := dialStateful(t, tn, p)
			c.send(&protocol.Invocation{InvocationID: "1", Target: "Record", Arguments: []any{1}})
			if got := describe(t, c, 1); !slices.Equal(got, []string{"done1=1"}) {
				t.Fatalf("first call: %v", got)
			}
			send(id, "a")
			if got := describe(t, c, 1); !slices.Equal(got, []string{"got:a"}) {
				t.Fatalf("before the drop: %v", got)
			}
			c.send(&protocol.Ack{SequenceID: 1}) // the Completion; "got:a" stays unacknowledged
			// The node has the Ack once a later message of the client was handled.
			c.send(&protocol.Invocation{InvocationID: "2", Target: "Record", Arguments: []any{2}})
			if got := describe(t, c, 1); !slices.Equal(got, []string{"done2=2"}) {
				t.Fatalf("second call: %v", got)
			}
			c.ws.CloseNow() // the network drops
			send(id, "b")
			send(id, "c")

			c2 := reattach(t, tn, p, token)
			// The client resends its unacknowledged invocation 2 (a duplicate) and a new one.
			c2.send(&protocol.Sequence{SequenceID: 2})
			c2.send(&protocol.Invocation{InvocationID: "2", Target: "Record", Arguments: []any{2}})
			c2.send(&protocol.Invocation{InvocationID: "3", Target: "Record", Arguments: []any{3}})
			want := []string{"seq2", "got:a", "done2=2", "got:b", "got:c", "done3=3"}
			if got := describe(t, c2, len(want)); !slices.Equal(got, want) {
				t.Fatalf("after the reconnect: %v, want %v", got, want)
			}
			if got := h.recorded(); !slices.Equal(got, []int{1, 2, 3}) {
				t.Fatalf("the hub ran %v, want [1 2 3]: a resent invocation ran twice or one was lost", got)
			}
			select {
			case err := <-h.gone:
				t.Fatalf("OnDisconnected ran (%v) though the client came back", err)
			default:
			}

			// Acknowledge everything, drop again, reconnect: only Sequence.
			c2.send(&protocol.Ack{SequenceID: 6})
			c2.send(&protocol.Invocation{InvocationID: "4", Target: "Record", Arguments: []any{4}})
			if got := describe(t, c2, 1); !slices.Equal(got, []string{"done4=4"}) {
				t.Fatalf("fourth call: %v", got)
			}
			c2.ws.CloseNow()
			c3 := reattach(t, tn, p, token)
			if got := describe(t, c3, 2); !slices.Equal(got, []string{"seq7", "done4=4"}) {
				t.Fatalf("after the second reconnect: %v, want [seq7 done4=4]", got)
			}

			// Gone for longer than the window: the connection ends.
			c3.ws.CloseNow()
			select {
			case err := <-h.gone:
				if err == nil {
					t.Fatal("OnDisconnected got no error for a client that did not come back")
				}
			case <-ctx.Done():
				t.Fatal("the connection did not end after the reconnect window")
			}
		})
	}
}

// TestStatefulConfigErrors: negative stateful-reconnect settings are refused by New.
func TestStatefulConfigErrors(t *testing.T) {
	for _, cfg := range []hub.Config{{StatefulReconnectBufferSize: -1}, {StatefulReconnectWindow: -time.Second}} {
		if _, err := hub.New(cfg); err == nil || !strings.Contains(err.Error(), "must not be negative") {
			t.Fatalf("hub.New(%+v) = %v, want an error about a negative setting", cfg, err)
		}
	}
}

// TestStatefulClientResultAcrossReconnect: a client result the node waits for when the client's
// socket drops is not failed: the invocation is resent after the reconnect and the client's
// answer on the new socket completes the call.
func TestStatefulClientResultAcrossReconnect(t *testing.T) {
	for _, p := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
		t.Run(p.Name(), func(t *testing.T) {
			h := &statefulHub{gone: make(chan error, 1)}
			tn := startNode(t, hub.Config{StatefulReconnect: true}, map[string]any{"s": h})
			hc, err := tn.node.HubContext("s")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, token, id := dialStateful(t, tn, p)
			type answer struct {
				v   int
				err error
			}
			got := make(chan answer, 1)
			go func() {
				v, err := hub.Invoke[int](ctx, hc.Clients, id, "add", 1, 2)
				got <- answer{v, err}
			}()
			first, ok := c.next().(*protocol.Invocation)
			if !ok || first.InvocationID == "" || first.Target != "add" {
				t.Fatalf("want the client invocation, got %#v", first)
			}
			c.ws.CloseNow()
			c2 := reattach(t, tn, p, token)
			if seq, ok := c2.next().(*protocol.Sequence); !ok || seq.SequenceID != 1 {
				t.Fatalf("want Sequence 1 first, got %#v", seq)
			}
			again, ok := c2.next().(*protocol.Invocation)
			if !ok || again.InvocationID != first.InvocationID {
				t.Fatalf("want the invocation resent, got %#v", again)
			}
			c2.send(&protocol.Sequence{SequenceID: 1})
			c2.send(&protocol.Completion{InvocationID: again.InvocationID, Result: 3, HasResult: true})
			if a := <-got; a.err != nil || a.v != 3 {
				t.Fatalf("the call ended with %d, %v; want 3", a.v, a.err)
			}
		})
	}
}
