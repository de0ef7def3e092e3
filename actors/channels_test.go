package actors

import (
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/hubfabric/hubfabric/backplane"
)

func TestChannelsRoundTrip(t *testing.T) {
	t.Parallel()
	routes := []Route{
		{Kind: RouteAll},
		{Kind: RouteConnection, Name: "abc_DEF-123"},
		{Kind: RouteGroup, Name: "room:1/with spaces"},
		{Kind: RouteUser, Name: "user@example.com"},
		{Kind: RouteGroup, Name: ""},
	}
	for _, r := range routes {
		ch := routeChannel("chat", r)
		hub, got, node, ok := parseChannel(ch)
		if !ok || node || hub != "chat" || got.Kind != r.Kind || got.Name != r.Name {
			t.Errorf("parseChannel(%q) = %q %+v node=%v ok=%v, want chat %+v", ch, hub, got, node, ok, r)
		}
	}
	if _, r, node, ok := parseChannel(nodeChannel("n-1")); !ok || !node || r.Name != "n-1" {
		t.Errorf("node channel: %+v %v %v", r, node, ok)
	}
	for _, bad := range []string{"", "x", "h:chat", "h::all", "h:chat:z:x", "h:chat:g", "other:h:chat:all"} {
		if _, _, _, ok := parseChannel(bad); ok {
			t.Errorf("parseChannel(%q) accepted a channel of another form", bad)
		}
	}
}

// channelID is what one channel name must stand for: a node's channel, or
// a route (kind and name) of a hub.
type channelID struct {
	node bool
	hub  string
	kind RouteKind
	name string
}

func (c channelID) channel() string {
	if c.node {
		return nodeChannel(c.name)
	}
	return routeChannel(c.hub, Route{Kind: c.kind, Name: c.name})
}

// drawName draws a user-chosen name (group, user, connection or node id)
// biased towards the pieces of channel syntax.
func drawName(t *rapid.T, label string) string {
	piece := rapid.SampledFrom([]string{":", "h:", "n:", "g:", "u:", "c:", "all", "chat", "{", "}", "{p1}", "hubfabric:", "x", ""})
	parts := rapid.SliceOfN(rapid.OneOf(piece, rapid.String()), 0, 5).Draw(t, label)
	return strings.Join(parts, "")
}

func drawChannelID(t *rapid.T, label string) channelID {
	hub := rapid.StringMatching(`[A-Za-z0-9._-]{1,8}`).Draw(t, label+".hub")
	switch k := rapid.IntRange(0, 4).Draw(t, label+".kind"); k {
	case 0:
		return channelID{node: true, name: drawName(t, label+".node")}
	case int(RouteAll):
		return channelID{hub: hub, kind: RouteAll}
	default:
		return channelID{hub: hub, kind: RouteKind(k), name: drawName(t, label+".name")}
	}
}

// TestChannelNamesAreUnambiguous: two different routes (of any hub a hub
// name may name, with any group, user or connection name) or node ids never
// share a channel, and every channel parses back to what it stands for.
// The backplane's prefix ("app:", one ':' at its end) goes in front, so
// with this no name reaches another route or app (backplane/redis
// TestRedisChannelNamesAreUnambiguous checks the prefix half).
func TestChannelNamesAreUnambiguous(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		a, b := drawChannelID(t, "a"), drawChannelID(t, "b")
		ca, cb := a.channel(), b.channel()
		if a != b && ca == cb {
			t.Fatalf("%+v and %+v share channel %q", a, b, ca)
		}
		hub, r, node, ok := parseChannel(ca)
		got := channelID{node: node, name: r.Name}
		if !node {
			got.hub, got.kind = hub, r.Kind
		}
		if !ok || got != a {
			t.Fatalf("parseChannel(%q) = %+v (ok %v), want %+v", ca, got, ok, a)
		}
	})
}

// TestSpawnNodeRefusesHubNamesWithAColon: a ':' in a hub name would make
// "h:<hub>:..." parse as another hub's channel.
func TestSpawnNodeRefusesHubNamesWithAColon(t *testing.T) {
	t.Parallel()
	sys := newTestSystem(t)
	for _, name := range []string{"", "chat:g", "a:b"} {
		cfg := nodeConfig("n1", backplane.NewMemory())
		cfg.Hubs = []string{name}
		if _, err := SpawnNode(sys.Root, cfg); err == nil || !strings.Contains(err.Error(), "hold no ':'") {
			t.Errorf("SpawnNode with hub %q: %v, want an error", name, err)
		}
	}
}
