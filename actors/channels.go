package actors

import "strings"

// Backplane channel names. The bridge alone names channels; the backplane
// prepends its own prefix (backplane/redis Options.ChannelPrefix), so apps
// sharing one Redis do not hear each other:
//
//	h:<hub>:all
//	h:<hub>:c:<connection id>
//	h:<hub>:g:<group>
//	h:<hub>:u:<user>
//	n:<node id>            (acks for one node)
//
// Hub names contain no ':' (package hub checks them); group and user names
// may.

// routeChannel returns the channel of route r of hub.
func routeChannel(hub string, r Route) string {
	switch r.Kind {
	case RouteAll:
		return "h:" + hub + ":all"
	case RouteConnection:
		return "h:" + hub + ":c:" + r.Name
	case RouteGroup:
		return "h:" + hub + ":g:" + r.Name
	case RouteUser:
		return "h:" + hub + ":u:" + r.Name
	}
	panic("actors: unknown route kind")
}

// nodeChannel returns the channel of node id.
func nodeChannel(id string) string { return "n:" + id }

// parseChannel splits a channel into its hub and route, or reports a node
// channel (node == true, with the node id in r.Name). ok is false for
// channels of another form.
func parseChannel(ch string) (hub string, r Route, node, ok bool) {
	if id, isNode := strings.CutPrefix(ch, "n:"); isNode {
		return "", Route{Name: id}, true, true
	}
	rest, found := strings.CutPrefix(ch, "h:")
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
