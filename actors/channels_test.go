package actors

import "testing"

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
