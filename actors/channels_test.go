package actors

import "testing"

func TestChannelsRoundTrip(t *testing.T) {
	t.Parallel()
	c := Channels{Prefix: "app:v1"} // a prefix may itself contain ':'
	routes := []Route{
		{Kind: RouteAll},
		{Kind: RouteConnection, Name: "abc_DEF-123"},
		{Kind: RouteGroup, Name: "room:1/with spaces"},
		{Kind: RouteUser, Name: "user@example.com"},
		{Kind: RouteGroup, Name: ""},
	}
	for _, r := range routes {
		ch := c.Route("chat", r)
		hub, got, node, ok := c.Parse(ch)
		if !ok || node || hub != "chat" || got.Kind != r.Kind || got.Name != r.Name {
			t.Errorf("Parse(%q) = %q %+v node=%v ok=%v, want chat %+v", ch, hub, got, node, ok, r)
		}
	}
	if _, r, node, ok := c.Parse(c.Node("n-1")); !ok || !node || r.Name != "n-1" {
		t.Errorf("node channel: %+v %v %v", r, node, ok)
	}
	for _, bad := range []string{"", "other:h:chat:all", "app:v1:x", "app:v1:h:chat", "app:v1:h::all", "app:v1:h:chat:z:x", "app:v1:h:chat:g"} {
		if _, _, _, ok := c.Parse(bad); ok {
			t.Errorf("Parse(%q) accepted a channel of another form", bad)
		}
	}
	// Another prefix never parses as ours: prefix isolation.
	if _, _, _, ok := (Channels{Prefix: "app"}).Parse(c.Route("chat", Route{Kind: RouteAll})); ok {
		t.Error(`prefix "app" accepted a channel of prefix "app:v1"`)
	}
}

func TestValidHubName(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{"chat": true, "a.b-c_D9": true, "": false, "a:b": false, "a/b": false, "x y": false, string(make([]byte, 65)): false} {
		if got := ValidHubName(name); got != want {
			t.Errorf("ValidHubName(%q) = %v, want %v", name, got, want)
		}
	}
}
