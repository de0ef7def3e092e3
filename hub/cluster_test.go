package hub_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/actors"
	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// startCluster starts n nodes sharing one in-memory bus and one token
// secret.
func startCluster(t testing.TB, n int, cfg hub.Config, hubs func() map[string]any) []*testNode {
	t.Helper()
	bus := backplane.NewMemoryBus()
	return startClusterOn(t, n, cfg, hubs, func() backplane.Backplane { return bus.NewBackplane() })
}

// startClusterOn starts n nodes, each with a backplane from newBackplane.
func startClusterOn(t testing.TB, n int, cfg hub.Config, hubs func() map[string]any, newBackplane func() backplane.Backplane) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		c := cfg
		c.Backplane = newBackplane()
		c.NodeID = string(rune('a' + i))
		c.TokenSecret = []byte("cluster secret")
		nodes[i] = startNode(t, c, hubs())
	}
	return nodes
}

func roomHubs() map[string]any { return map[string]any{"room": &roomHub{}} }

func TestTwoNodesEveryRoute(t *testing.T) {
	checkEveryRouteAcrossNodes(t, startCluster(t, 2, hub.Config{GroupAckTimeout: 500 * time.Millisecond}, roomHubs))
}

// checkEveryRouteAcrossNodes drives every route between clients on two
// nodes; nodes must use a 500 ms group ack timeout.
func checkEveryRouteAcrossNodes(t *testing.T, nodes []*testNode) {
	a := dial(t, nodes[0], "json")
	b := dial(t, nodes[1], "messagepack")
	c := dial(t, nodes[1], "json")
	ra, rb, rc := listen(a), listen(b), listen(c)
	ida, idb, idc := invoke[string](t, a, "Whoami"), invoke[string](t, b, "Whoami"), invoke[string](t, c, "Whoami")

	invoke[any](t, a, "ToAll", "1")
	ra.expect(t, "a", "all:1")
	rb.expect(t, "b", "all:1")
	rc.expect(t, "c", "all:1")

	invoke[any](t, b, "ToOthers", "2")
	ra.expect(t, "a", "others:2")
	rc.expect(t, "c", "others:2")

	invoke[any](t, a, "ToClient", idb, "3")
	invoke[any](t, a, "ToClients", []string{idb, idc}, "4")
	invoke[any](t, a, "ToAllExcept", []string{idb}, "5")
	// Same sender (a), different routes (connection, all): across routes
	// the order is not promised either.
	rb.expect(t, "b", "client:3", "clients:4")
	rc.expectUnordered(t, "c", "clients:4", "allExcept:5")
	ra.expect(t, "a", "allExcept:5")

	// Groups spanning nodes, joined locally and remotely.
	invoke[any](t, a, "Join", "g")
	hc, err := nodes[0].node.HubContext("room")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hc.Groups.Add(ctx, idb, "g"); err != nil { // b lives on the other node
		t.Fatalf("remote AddToGroup: %v", err)
	}
	invoke[any](t, c, "ToGroup", "g", "6")
	invoke[any](t, a, "ToOthersInGroup", "g", "7")
	invoke[any](t, c, "ToGroupExcept", "g", []string{ida}, "8")
	ra.expect(t, "a", "group:6")
	// 6 and 8 come from c, 7 from a on the other node: only c's two are
	// ordered with respect to each other.
	rb.expectUnordered(t, "b", "group:6", "othersInGroup:7", "groupExcept:8")
	if err := hc.Groups.Remove(ctx, idb, "g"); err != nil {
		t.Fatalf("remote RemoveFromGroup: %v", err)
	}
	invoke[any](t, c, "ToGroup", "g", "9")
	ra.expect(t, "a", "group:9")

	// No node has this connection: an error a client may see, at once when
	// the backplane knows nobody listens (memory), else after the ack
	// timeout (Redis).
	start := time.Now()
	err = hc.Groups.Add(ctx, "no-such-connection", "g")
	var he *hub.Error
	if !errors.Is(err, actors.ErrUnknownConnection) || !errors.As(err, &he) || !strings.Contains(he.Message, `unknown connection`) || !strings.Contains(he.Message, `"no-such-connection"`) {
		t.Fatalf("AddToGroup of an unknown connection = %v", err)
	}
	if took := time.Since(start); strings.Contains(he.Message, "within") && took < 500*time.Millisecond {
		t.Fatalf("the ack timeout error came after %s, before the 500ms timeout", took)
	}

	// Order: 300 messages from one sender over one route arrive in order.
	for i := range 300 {
		if err := hc.Clients.Client(idb).Send(ctx, "got", "seq", string(rune('0'+i%10))); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range 300 {
		want = append(want, "seq:"+string(rune('0'+i%10)))
	}
	rb.expect(t, "b", want...)

	invoke[any](t, c, "ToAll", "end")
	for who, r := range map[string]*received{"a": ra, "b": rb, "c": rc} {
		r.expect(t, who, "all:end")
		select {
		case extra := <-r.ch:
			t.Fatalf("%s got an extra %q", who, extra)
		default:
		}
	}
}

func TestNegotiateOnOneNodeConnectOnAnother(t *testing.T) {
	nodes := startCluster(t, 2, hub.Config{}, func() map[string]any { return map[string]any{"room": &roomHub{}} })
	status, nr, body := negotiate(t, nodes[0].url, "room", nil)
	if status != http.StatusOK {
		t.Fatalf("negotiate: %d %s", status, body)
	}
	c, _, err := dialRaw(t, nodes[1].url, "room", "id="+nr.ConnectionToken, nil)
	if err != nil {
		t.Fatalf("connect to the other node with the token: %v", err)
	}
	c.handshake(protoJSON())
	id := callWhoami(t, c)
	if id != nr.ConnectionID {
		t.Fatalf("the other node gave connection id %q, negotiate said %q", id, nr.ConnectionID)
	}
}

func TestSendFailsLoudlyWhenTheBackplaneIsDown(t *testing.T) {
	bus := backplane.NewMemoryBus()
	bp := bus.NewBackplane()
	var events = make(chan backplane.EventKind, 16)
	tn := startNode(t, hub.Config{Backplane: bp, OnBackplaneEvent: func(e backplane.Event) { events <- e.Kind }}, map[string]any{"room": &roomHub{}})
	a := dial(t, tn, "json")
	ra := listen(a)
	bp.SetAvailable(false)
	if k := <-events; k != backplane.EventDown {
		t.Fatalf("first event %v, want down", k)
	}
	if ok, why := tn.node.Ready(); ok || why != "backplane down" {
		t.Fatalf("Ready during an outage = %v %q", ok, why)
	}
	// The local client still gets the message; the caller learns that other
	// nodes could not be reached.
	err := invokeErr(t, a, "ToAll", "x")
	var he *client.HubError
	if !errors.As(err, &he) || strings.Contains(he.Message, "SetAvailable") || !strings.HasSuffix(he.Message, "HubException: message: not delivered to other nodes: the backplane is unavailable") {
		t.Fatalf("send during an outage = %v, want a hub error naming the backplane", err)
	}
	ra.expect(t, "a", "all:x")
	hc, _ := tn.node.HubContext("room")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hc.Clients.All().Send(ctx, "got", "all", "y"); !errors.Is(err, backplane.ErrUnavailable) {
		t.Fatalf("HubContext send during an outage = %v, want ErrUnavailable", err)
	}
	ra.expect(t, "a", "all:y")
	bp.SetAvailable(true)
	for k := range events {
		if k == backplane.EventRestored {
			break
		}
	}
	if ok, why := tn.node.Ready(); !ok {
		t.Fatalf("Ready after recovery = %v %q", ok, why)
	}
	if err := hc.Clients.All().Send(ctx, "got", "all", "z"); err != nil {
		t.Fatalf("send after recovery: %v", err)
	}
	ra.expect(t, "a", "all:z")
	if tn.node.Stats().PublishFailed == 0 {
		t.Fatal("failed publishes were not counted")
	}
}
