package actors

import "strings"

// Channels names backplane channels. A name starts with the prefix so apps
// sharing one Redis do not see each other's traffic:
//
//	<prefix>:h:<hub>:all
//	<prefix>:h:<hub>:c:<connection id>
//	<prefix>:h:<hub>:g:<group>
//	<prefix>:h:<hub>:u:<user>
//	<prefix>:n:<node id>            (acks for one node)
//
// Hub names contain no ':' (see ValidHubName); group and user names may.
type Channels struct{ Prefix string }

// Route returns the channel of a route of hub.
func (c Channels) Route(hub string, r Route) string {
	switch r.Kind {
	case RouteAll:
		return c.Prefix + ":h:" + hub + ":all"
	case RouteConnection:
		return c.Prefix + ":h:" + hub + ":c:" + r.Name
	case RouteGroup:
		return c.Prefix + ":h:" + hub + ":g:" + r.Name
	case RouteUser:
		return c.Prefix + ":h:" + hub + ":u:" + r.Name
	}
	panic("actors: unknown route kind")
}

// Node returns the channel of node id.
func (c Channels) Node(id string) string { return c.Prefix + ":n:" + id }

// Parse splits a channel into its hub and route, or reports a node channel
// (node == true, with the node id in r.Name). ok is false for channels of
// another prefix or form.
func (c Channels) Parse(ch string) (hub string, r Route, node, ok bool) {
	rest, found := strings.CutPrefix(ch, c.Prefix+":")
	if !found {
		return "", Route{}, false, false
	}
	if id, isNode := strings.CutPrefix(rest, "n:"); isNode {
		return "", Route{Name: id}, true, true
	}
	rest, found = strings.CutPrefix(rest, "h:")
	if !found {
		return "", Route{}, false, false
	}
	i := strings.IndexByte(rest, ':')
	if i <= 0 {
		return "", Route{}, false, false
	}
	hub, rest = rest[:i], rest[i+1:]
	if rest == "all" {
		return hub, Route{Kind: RouteAll}, false, true
	}
	if len(rest) < 2 || rest[1] != ':' {
		return "", Route{}, false, false
	}
	name := rest[2:]
	switch rest[0] {
	case 'c':
		return hub, Route{Kind: RouteConnection, Name: name}, false, true
	case 'g':
		return hub, Route{Kind: RouteGroup, Name: name}, false, true
	case 'u':
		return hub, Route{Kind: RouteUser, Name: name}, false, true
	}
	return "", Route{}, false, false
}

// ValidHubName reports whether name can name a hub: 1-64 characters from
// letters, digits, '-', '_' and '.'.
func ValidHubName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return false
		}
	}
	return true
}
