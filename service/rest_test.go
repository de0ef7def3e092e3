package service

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

const v = "?api-version=2022-06-01"

// exerciseREST runs every REST operation through a and b (two nodes, or
// the same node twice), with clients on both.
func exerciseREST(t *testing.T, a, b *testNode) {
	api := func(n *testNode, path string) string { return n.url + "/api/hubs/chat" + path }
	alice := connect(t, a, "alice", "json")
	bob := connect(t, b, "bob", "messagepack")
	aid, bid := alice.conn.ConnectionID(), bob.conn.ConnectionID()

	// Send to all, with and without excluded.
	expect(t, "POST", api(a, "/:send"+v), body("msg", "all-1"), 202)
	alice.want(t, "all-1")
	bob.want(t, "all-1")
	expect(t, "POST", api(b, "/:send"+v+"&excluded="+url.QueryEscape(aid)), body("msg", "all-2"), 202)
	bob.want(t, "all-2") // before the next send: sends through two nodes have no order between them
	expect(t, "POST", api(a, "/:send"+v), body("msg", "all-3"), 202)
	alice.want(t, "all-3") // all-2 skipped her
	bob.want(t, "all-3")

	// To one connection and to a user, across nodes.
	expect(t, "POST", api(a, "/connections/"+bid+"/:send"+v), body("msg", "to-bob"), 202)
	bob.want(t, "to-bob")
	expect(t, "POST", api(b, "/users/alice/:send"+v), body("msg", "to-alice"), 202)
	alice.want(t, "to-alice")

	// Existence.
	expect(t, "HEAD", api(a, "/connections/"+bid+v), "", 200)
	expect(t, "GET", api(b, "/connections/"+aid+v), "", 200)
	expect(t, "HEAD", api(a, "/connections/nope"+v), "", 404)
	expect(t, "HEAD", api(a, "/users/alice"+v), "", 200)
	expect(t, "HEAD", api(b, "/users/nobody"+v), "", 404)
	expect(t, "HEAD", api(a, "/groups/g1"+v), "", 404)

	// A connection joins a group through the other node; group send with
	// excluded.
	expect(t, "PUT", api(a, "/groups/g1/connections/"+bid+v), "", 200)
	expect(t, "PUT", api(b, "/groups/g1/connections/"+aid+v), "", 200)
	expect(t, "PUT", api(a, "/groups/g1/connections/nope"+v), "", 404)
	expect(t, "HEAD", api(b, "/groups/g1"+v), "", 200)
	// Sent through different nodes, the two sends have no order between
	// them (bob's node delivers its own send locally, the other one's
	// through Redis), so bob gets the first before the second is sent.
	expect(t, "POST", api(a, "/groups/g1/:send"+v+"&excluded="+url.QueryEscape(aid)), body("msg", "g1-1"), 202)
	bob.want(t, "g1-1")
	expect(t, "POST", api(b, "/groups/g1/:send"+v), body("msg", "g1-2"), 202)
	bob.want(t, "g1-2")
	alice.want(t, "g1-2")

	// Presence extension.
	var pres struct {
		ConnectionCount, UserCount int64
	}
	if err := json.Unmarshal([]byte(expect(t, "GET", a.url+"/api/hubfabric/hubs/chat/presence"+v, "", 200)), &pres); err != nil || pres.ConnectionCount != 2 || pres.UserCount != 2 {
		t.Fatalf("presence: %+v, %v", pres, err)
	}
	var mem struct{ ConnectionIDs []string }
	if err := json.Unmarshal([]byte(expect(t, "GET", b.url+"/api/hubfabric/hubs/chat/groups/g1/members"+v, "", 200)), &mem); err != nil || len(mem.ConnectionIDs) != 2 {
		t.Fatalf("members: %+v, %v", mem, err)
	}

	// Leaving.
	expect(t, "DELETE", api(b, "/groups/g1/connections/"+bid+v), "", 200)
	expect(t, "DELETE", api(b, "/groups/g1/connections/nope"+v), "", 404)
	expect(t, "POST", api(a, "/groups/g1/:send"+v), body("msg", "g1-3"), 202)
	expect(t, "POST", api(a, "/connections/"+bid+"/:send"+v), body("msg", "marker-1"), 202)
	alice.want(t, "g1-3")
	bob.want(t, "marker-1") // not g1-3

	// Remove a connection from all groups.
	expect(t, "PUT", api(a, "/groups/g4/connections/"+bid+v), "", 200)
	expect(t, "PUT", api(a, "/groups/g5/connections/"+bid+v), "", 200)
	expect(t, "DELETE", api(a, "/connections/"+bid+"/groups"+v), "", 200)
	expect(t, "HEAD", api(b, "/groups/g4"+v), "", 404)
	expect(t, "HEAD", api(b, "/groups/g5"+v), "", 404)
	expect(t, "POST", api(a, "/groups/g4/:send"+v), body("msg", "g4"), 202)
	expect(t, "POST", api(a, "/connections/"+bid+"/:send"+v), body("msg", "marker-2"), 202)
	bob.want(t, "marker-2")

	// A user joins a group with a ttl: her current connection joins.
	expect(t, "PUT", api(b, "/users/alice/groups/g2"+v+"&ttl=600"), "", 200)
	expect(t, "HEAD", api(a, "/users/alice/groups/g2"+v), "", 200)
	expect(t, "HEAD", api(a, "/users/bob/groups/g2"+v), "", 404)
	expect(t, "POST", api(a, "/groups/g2/:send"+v), body("msg", "g2-1"), 202)
	alice.want(t, "g2-1")
	expect(t, "DELETE", api(a, "/users/alice/groups/g2"+v), "", 200)
	expect(t, "HEAD", api(b, "/users/alice/groups/g2"+v), "", 404)
	expect(t, "POST", api(a, "/groups/g2/:send"+v), body("msg", "g2-2"), 202)
	expect(t, "POST", api(a, "/users/alice/:send"+v), body("msg", "marker-3"), 202)
	alice.want(t, "marker-3")

	// ... and her future connections join: carol's group is set before she
	// connects, on the other node.
	expect(t, "PUT", api(a, "/users/carol/groups/g3"+v), "", 200)
	expect(t, "PUT", api(a, "/users/carol/groups/g7"+v), "", 200)
	carol := connect(t, b, "carol", "json")
	expect(t, "POST", api(a, "/groups/g3/:send"+v), body("msg", "g3-1"), 202)
	carol.want(t, "g3-1")
	expect(t, "DELETE", api(b, "/users/carol/groups"+v), "", 200)
	expect(t, "HEAD", api(a, "/users/carol/groups/g7"+v), "", 404)
	expect(t, "POST", api(a, "/groups/g7/:send"+v), body("msg", "g7"), 202)
	expect(t, "POST", api(a, "/users/carol/:send"+v), body("msg", "marker-4"), 202)
	carol.want(t, "marker-4")

	// The older v1 paths.
	expect(t, "POST", a.url+"/api/v1/hubs/chat", body("msg", "v1-all"), 202)
	alice.want(t, "v1-all")
	bob.want(t, "v1-all")
	carol.want(t, "v1-all")
	expect(t, "POST", a.url+"/api/v1/hubs/chat/users/bob", body("msg", "v1-user"), 202)
	bob.want(t, "v1-user")
	expect(t, "PUT", a.url+"/api/v1/hubs/chat/groups/v1g/connections/"+aid, "", 200)
	expect(t, "POST", b.url+"/api/v1/hubs/chat/groups/v1g", body("msg", "v1-group"), 202)
	alice.want(t, "v1-group")
	expect(t, "POST", b.url+"/api/v1/hubs/chat/connections/"+aid, body("msg", "v1-conn"), 202)
	alice.want(t, "v1-conn")
	expect(t, "GET", a.url+"/api/v1/health", "", 200)
	expect(t, "GET", a.url+"/api/health"+v, "", 200)

	// Closing: one connection on the other node, with a reason.
	expect(t, "DELETE", api(a, "/connections/"+carol.conn.ConnectionID()+v+"&reason=bye-carol"), "", 204)
	if err := carol.closed(t); err == nil || !strings.Contains(err.Error(), "bye-carol") {
		t.Fatalf("carol closed with %v, want the reason", err)
	}
	// A group's and a user's connections.
	dave := connect(t, a, "dave", "json")
	erin := connect(t, b, "erin", "json")
	expect(t, "PUT", api(b, "/groups/g6/connections/"+dave.conn.ConnectionID()+v), "", 200)
	expect(t, "POST", api(b, "/groups/g6/:closeConnections"+v+"&reason=g6-closed"), "", 204)
	if err := dave.closed(t); err == nil || !strings.Contains(err.Error(), "g6-closed") {
		t.Fatalf("dave closed with %v", err)
	}
	expect(t, "POST", api(a, "/users/erin/:closeConnections"+v+"&reason=erin-closed"), "", 204)
	if err := erin.closed(t); err == nil || !strings.Contains(err.Error(), "erin-closed") {
		t.Fatalf("erin closed with %v", err)
	}
	// The hub's, except alice.
	expect(t, "POST", api(b, "/:closeConnections"+v+"&excluded="+url.QueryEscape(aid)+"&reason=hub-closed"), "", 204)
	if err := bob.closed(t); err == nil || !strings.Contains(err.Error(), "hub-closed") {
		t.Fatalf("bob closed with %v", err)
	}
	expect(t, "POST", api(a, "/users/alice/:send"+v), body("msg", "still-here"), 202)
	alice.want(t, "still-here")
}

func TestRESTOneNode(t *testing.T) {
	n := startNode(t, backplane.NewMemory(), NewMemoryStore(), nil)
	exerciseREST(t, n, n)
}

func TestRESTTwoNodesMemory(t *testing.T) {
	bus := backplane.NewMemoryBus()
	store := NewMemoryStore()
	a := startNode(t, bus.NewBackplane(), store, nil)
	b := startNode(t, bus.NewBackplane(), store, nil)
	exerciseREST(t, a, b)
}

func redisNodes(t *testing.T, addrs string) (*testNode, *testNode) {
	prefix := "svc" + strings.ReplaceAll(t.Name(), "/", "-") + ":"
	mk := func() *testNode {
		bp, err := redisbp.NewFromString(addrs, func(o *redisbp.Options) { o.ChannelPrefix = prefix })
		if err != nil {
			t.Fatal(err)
		}
		return startNode(t, bp, redisbp.NewStore(bp), nil)
	}
	return mk(), mk()
}

func TestRESTTwoNodesRedis(t *testing.T) {
	srv := redistest.StartStandalone(t)
	a, b := redisNodes(t, srv.Addr)
	exerciseREST(t, a, b)
}

func TestRESTTwoNodesRedisCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	a, b := redisNodes(t, strings.Join(c.Addrs, ","))
	exerciseREST(t, a, b)
}

// TestRESTUserOnThreeNodes: a send to a user whose connections sit on three
// nodes reaches each of them once; so does a group send and a close. Order
// holds per route (design invariant 2), not across routes: a node delivers
// a user send from its hub actor and a group send one hop later, from the
// group's actor, so a group send may arrive after a user send made after
// it. Each route therefore ends with its own marker.
func TestRESTUserOnThreeNodes(t *testing.T) {
	bus := backplane.NewMemoryBus()
	store := NewMemoryStore()
	var nodes []*testNode
	var conns []*testClient
	for range 3 {
		n := startNode(t, bus.NewBackplane(), store, nil)
		nodes = append(nodes, n)
		conns = append(conns, connect(t, n, "multi", "json"), connect(t, n, "multi", "messagepack"))
	}
	api := nodes[0].url + "/api/hubs/chat"
	expect(t, "POST", api+"/users/multi/:send"+v, body("msg", "once"), 202)
	expect(t, "PUT", api+"/users/multi/groups/everywhere"+v, "", 200)
	expect(t, "POST", api+"/groups/everywhere/:send"+v, body("msg", "group-once"), 202)
	expect(t, "POST", api+"/users/multi/:send"+v, body("msg", "end"), 202)
	expect(t, "POST", api+"/groups/everywhere/:send"+v, body("msg", "group-end"), 202)
	for _, c := range conns {
		// Everything up to both markers, in each route's order, and
		// nothing twice in between.
		var user, group []string
		for !slices.Contains(user, "end") || !slices.Contains(group, "group-end") {
			switch m := c.next(t); m {
			case "once", "end":
				user = append(user, m)
			default:
				group = append(group, m)
			}
		}
		if !slices.Equal(user, []string{"once", "end"}) || !slices.Equal(group, []string{"group-once", "group-end"}) {
			t.Fatalf("client %s got %q on its user's route and %q on the group's, want [once end] and [group-once group-end]", c.conn.ConnectionID(), user, group)
		}
	}
	var pres struct{ ConnectionCount, UserCount int64 }
	if err := json.Unmarshal([]byte(expect(t, "GET", nodes[2].url+"/api/hubfabric/hubs/chat/presence"+v, "", 200)), &pres); err != nil || pres.ConnectionCount != 6 || pres.UserCount != 1 {
		t.Fatalf("presence: %+v, %v", pres, err)
	}
	expect(t, "POST", api+"/users/multi/:closeConnections"+v+"&reason=all-gone", "", 204)
	for _, c := range conns {
		if err := c.closed(t); err == nil || !strings.Contains(err.Error(), "all-gone") {
			t.Fatalf("closed with %v", err)
		}
	}
}
