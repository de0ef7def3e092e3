package hub_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

func httpDo(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestLongPollingAcrossNodes: two nodes on one bus, no token secret given;
// negotiate on one, then every poll and send goes to the other node than
// the one before. The connection's home node owns it: the hub method runs
// every send in the order sent, and the server's messages arrive through
// polls on both nodes, each exactly once, in order. Then bad input across
// nodes: a send for a connection no node has (404), a DELETE on the other
// node (202) and a poll after it (204).
func TestLongPollingAcrossNodes(t *testing.T) {
	bus := backplane.NewMemoryBus()
	room := &roomHub{}
	var nodes []*testNode
	for i := range 2 {
		nodes = append(nodes, startNode(t, hub.Config{Backplane: bus.NewBackplane(), NodeID: string(rune('a' + i))}, map[string]any{"room": room}))
	}
	status, nr, body := negotiate(t, nodes[0].url, "room", nil)
	if status != http.StatusOK {
		t.Fatalf("negotiate: %d %s", status, body)
	}
	turn := 1 // the first request after negotiate goes to the other node
	next := func() string {
		u := nodes[turn%2].url + "room?id=" + nr.ConnectionToken
		turn++
		return u
	}
	// received collects what polls bring, alternating nodes.
	var received []protocol.Message
	var buf []byte
	poll := func() {
		t.Helper()
		status, b := httpDo(t, http.MethodGet, next(), nil)
		if status != http.StatusOK {
			t.Fatalf("poll: %d %q", status, b)
		}
		buf = append(buf, b...)
		msgs, n, err := protocol.JSON.ParseMessages(buf, 0)
		if err != nil {
			t.Fatalf("poll body %q: %v", b, err)
		}
		buf = buf[n:]
		received = append(received, msgs...)
	}
	poll() // the first poll creates the connection on its home node
	if status, b := httpDo(t, http.MethodPost, next(), []byte(`{"protocol":"json","version":1}`+"\x1e")); status != http.StatusOK {
		t.Fatalf("handshake: %d %q", status, b)
	}
	status, b := httpDo(t, http.MethodGet, next(), nil)
	if status != http.StatusOK || string(b) != "{}\x1e" {
		t.Fatalf("handshake answer: %d %q", status, b)
	}
	const n = 40
	for i := 1; i <= n; i++ {
		rec := fmt.Sprintf(`{"type":1,"target":"Record","arguments":[%d],"invocationId":"%d"}`+"\x1e", i, i)
		if status, b := httpDo(t, http.MethodPost, next(), []byte(rec)); status != http.StatusOK {
			t.Fatalf("send %d: %d %q", i, status, b)
		}
	}
	hc, err := nodes[1].node.HubContext("room")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if err := hc.Clients.Client(nr.ConnectionID).Send(context.Background(), "pushed", i); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	var completions, pushed []string
	for len(completions) < n || len(pushed) < n {
		poll()
		for _, m := range received {
			switch m := m.(type) {
			case *protocol.Completion:
				completions = append(completions, m.InvocationID)
			case *protocol.Invocation:
				pushed = append(pushed, fmt.Sprintf("%s", m.Arguments[0]))
			}
		}
		received = received[:0]
	}
	var want []string
	var wantOrder []int
	for i := 1; i <= n; i++ {
		want = append(want, fmt.Sprint(i))
		wantOrder = append(wantOrder, i)
	}
	// The completions of separate invocations may overtake each other:
	// the hub frees a call's slot when its method returns, before it sends
	// the Completion (hub/invoker.go). Each comes once; the pushed
	// messages, one route from one sender, come in order.
	sorted := slices.Clone(completions)
	slices.SortFunc(sorted, func(a, b string) int { return len(a) - len(b) + strings.Compare(a, b)*boolInt(len(a) == len(b)) })
	if !slices.Equal(sorted, want) || !slices.Equal(pushed, want) {
		t.Fatalf("through polls on both nodes: completions %v, pushed %v; want each of 1..%d once (pushed in order)", completions, pushed, n)
	}
	room.mu.Lock()
	order := slices.Clone(room.order)
	room.mu.Unlock()
	if !slices.Equal(order, wantOrder) {
		t.Fatalf("the hub ran the sends in the order %v, want 1..%d", order, n)
	}

	// Bad input across nodes.
	_, other, _ := negotiate(t, nodes[0].url, "room", nil)
	status, b = httpDo(t, http.MethodPost, nodes[1].url+"room?id="+other.ConnectionToken, []byte("{}\x1e"))
	if status != http.StatusNotFound || !strings.Contains(string(b), "No Connection with that ID") {
		t.Fatalf("send for a connection no node has: %d %q, want 404", status, b)
	}
	if status, b := httpDo(t, http.MethodDelete, next(), nil); status != http.StatusAccepted {
		t.Fatalf("DELETE: %d %q", status, b)
	}
	for range 2 {
		if status, b := httpDo(t, http.MethodGet, next(), nil); status != http.StatusNoContent {
			t.Fatalf("poll after DELETE: %d %q, want 204", status, b)
		}
	}
}

// TestConnectionsGaugeByTransport: hubfabric_connections counts a
// long-polling and an SSE connection under their transport labels while
// they are open, and not after.
func TestConnectionsGaugeByTransport(t *testing.T) {
	reg := prometheus.NewRegistry()
	tn := startNode(t, metricsConfig(reg), map[string]any{"chat": metricsHub{}})
	_, lp, _ := negotiate(t, tn.url, "chat", nil)
	lpURL := tn.url + "chat?id=" + lp.ConnectionToken
	httpDo(t, http.MethodGet, lpURL, nil)
	httpDo(t, http.MethodPost, lpURL, []byte(`{"protocol":"json","version":1}`+"\x1e"))
	if status, b := httpDo(t, http.MethodGet, lpURL, nil); status != http.StatusOK || string(b) != "{}\x1e" {
		t.Fatalf("handshake answer: %d %q", status, b)
	}
	_, sse, _ := negotiate(t, tn.url, "chat", nil)
	sseURL := tn.url + "chat?id=" + sse.ConnectionToken
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sseURL, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	httpDo(t, http.MethodPost, sseURL, []byte(`{"protocol":"json","version":1}`+"\x1e"))
	want := ":\r\ndata: {}\x1e\r\n\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != want {
		t.Fatalf("event stream: %q, %v", got, err)
	}
	g := gather(t, reg)
	g.want(t, 1, "hubfabric_connections", "hub", "chat", "transport", "longpolling")
	g.want(t, 1, "hubfabric_connections", "hub", "chat", "transport", "serversentevents")
	g.want(t, 0, "hubfabric_connections", "hub", "chat", "transport", "websockets")
	if status, _ := httpDo(t, http.MethodDelete, lpURL, nil); status != http.StatusAccepted {
		t.Fatalf("DELETE: %d", status)
	}
	if status, _ := httpDo(t, http.MethodGet, lpURL, nil); status != http.StatusNoContent {
		t.Fatalf("poll after DELETE: %d", status)
	}
	// The 204 comes once the connection is torn down: it is no longer
	// counted.
	gather(t, reg).want(t, 0, "hubfabric_connections", "hub", "chat", "transport", "longpolling")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
