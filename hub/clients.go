package hub

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hubfabric/hubfabric/actors"
)

// ClientProxy sends invocations to a set of clients (All, a group, a
// user...). It is a small value, safe for concurrent use.
type ClientProxy struct {
	rt     *hubRuntime
	routes []actors.Route
}

// Send makes every addressed client run target(args...) once. It returns
// when local recipients have the message queued and other nodes were
// reached through the backplane, or with an error saying which part failed:
// when other nodes could not be reached, an *Error whose text the client
// may see ("message: not delivered to other nodes: the backplane is
// unavailable"), wrapping actors.ErrNotDeliveredRemotely and
// backplane.ErrUnavailable; the cause is in the node's log. Arguments are
// serialized once per protocol and shared by all recipients. With no
// deadline on ctx, the wait is bounded by Config.BackplaneTimeout plus 5 s.
func (p ClientProxy) Send(ctx context.Context, target string, args ...any) error {
	if p.rt == nil {
		return ErrNotStarted
	}
	return p.rt.send(ctx, p.routes, target, args)
}

// Clients addresses clients of one hub: all of them, some connections,
// groups or users. The zero value is not usable; get one from a Context or
// a HubContext.
type Clients struct{ targets }

// targets holds the methods shared by Clients and CallerClients (embedded
// unexported so that the Clients method does not collide with a field).
type targets struct{ rt *hubRuntime }

func (c targets) proxy(routes ...actors.Route) ClientProxy {
	return ClientProxy{rt: c.rt, routes: routes}
}

func (c targets) many(kind actors.RouteKind, names []string) ClientProxy {
	routes := make([]actors.Route, 0, len(names))
	for _, n := range names {
		if n != "" {
			routes = append(routes, actors.Route{Kind: kind, Name: n})
		}
	}
	return c.proxy(routes...)
}

// All addresses every connection of the hub, on every node.
func (c targets) All() ClientProxy { return c.proxy(actors.Route{Kind: actors.RouteAll}) }

// AllExcept addresses every connection except the given connection ids.
func (c targets) AllExcept(connectionIDs ...string) ClientProxy {
	return c.proxy(actors.Route{Kind: actors.RouteAll, Excluded: connectionIDs})
}

// Client addresses one connection, wherever it is connected.
func (c targets) Client(connectionID string) ClientProxy {
	return c.proxy(actors.Route{Kind: actors.RouteConnection, Name: connectionID})
}

// Clients addresses several connections.
func (c targets) Clients(connectionIDs ...string) ClientProxy {
	return c.many(actors.RouteConnection, connectionIDs)
}

// Group addresses the members of a group.
func (c targets) Group(name string) ClientProxy {
	return c.proxy(actors.Route{Kind: actors.RouteGroup, Name: name})
}

// Groups addresses the members of several groups; a connection in two of
// them gets the message twice, as in SignalR.
func (c targets) Groups(names ...string) ClientProxy { return c.many(actors.RouteGroup, names) }

// GroupExcept addresses a group's members except the given connection ids.
func (c targets) GroupExcept(name string, connectionIDs ...string) ClientProxy {
	return c.proxy(actors.Route{Kind: actors.RouteGroup, Name: name, Excluded: connectionIDs})
}

// User addresses every connection of a user id.
func (c targets) User(userID string) ClientProxy {
	return c.proxy(actors.Route{Kind: actors.RouteUser, Name: userID})
}

// Users addresses every connection of several users.
func (c targets) Users(userIDs ...string) ClientProxy { return c.many(actors.RouteUser, userIDs) }

// CallerClients adds the caller-relative targets to Clients.
type CallerClients struct {
	targets
	callerID string
}

// Caller addresses the connection that made the call.
func (c CallerClients) Caller() ClientProxy { return c.Client(c.callerID) }

// Others addresses every connection except the caller.
func (c CallerClients) Others() ClientProxy { return c.AllExcept(c.callerID) }

// OthersInGroup addresses a group's members except the caller.
func (c CallerClients) OthersInGroup(name string) ClientProxy {
	return c.GroupExcept(name, c.callerID)
}

// Groups adds connections to groups and removes them, wherever the
// connection is connected. Safe for concurrent use.
type Groups struct{ rt *hubRuntime }

// Add puts a connection in a group. It returns once the membership is in
// effect: the connection gets every later message sent to the group while
// the backplane is healthy. For a connection on another node it waits for
// that node's acknowledgement. When no node has the connection it fails
// with an *Error wrapping actors.ErrUnknownConnection, at once when the
// backplane knows no other node listens, else after Config.GroupAckTimeout.
func (g Groups) Add(ctx context.Context, connectionID, group string) error {
	return g.change(ctx, actors.GroupAdd, connectionID, group)
}

// Remove takes a connection out of a group; once it returns the connection
// gets nothing more from that group. Removing a non-member is not an error.
func (g Groups) Remove(ctx context.Context, connectionID, group string) error {
	return g.change(ctx, actors.GroupRemove, connectionID, group)
}

func (g Groups) change(ctx context.Context, action actors.GroupAction, connectionID, group string) error {
	if g.rt == nil {
		return ErrNotStarted
	}
	if connectionID == "" || group == "" {
		return errors.New("hub: group changes need a connection id and a group name")
	}
	n := g.rt.node
	res, err := n.request(ctx, g.rt.pid, &actors.GroupRequest{Action: action, ConnectionID: connectionID, Group: group}, n.cfg.GroupAckTimeout+n.cfg.BackplaneTimeout+answerMargin)
	if err == nil {
		if r, ok := res.(*actors.GroupResponse); ok {
			err = r.Err
		}
	}
	if err != nil {
		return clientError(fmt.Sprintf("group %q", shorten(group)), err)
	}
	return nil
}

// clientError makes an error from the actors one whose text a hub method
// may hand to its client (an *Error): the actors' errors are written for
// clients and carry no infrastructure details (those are logged). Other
// errors (ctx ending) are returned as they are.
func clientError(what string, err error) error {
	if errors.Is(err, actors.ErrNotDeliveredRemotely) || errors.Is(err, actors.ErrUnknownConnection) || errors.Is(err, actors.ErrLimitExceeded) {
		return &Error{Message: what + ": " + err.Error(), Err: err}
	}
	return fmt.Errorf("hub: %s: %w", what, err)
}

// send serializes the invocation once per protocol, then asks the hub actor
// to route it once per route.
func (rt *hubRuntime) send(ctx context.Context, routes []actors.Route, target string, args []any) error {
	// Encoded (and target checked) once; each route's request shares the bytes.
	base, err := actors.NewSendRequest(actors.Route{Kind: actors.RouteAll}, target, args...)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	n := rt.node
	futures := make([]*pendingRequest, 0, len(routes))
	for _, r := range routes {
		futures = append(futures, n.start(ctx, rt.pid, base.To(r), n.cfg.BackplaneTimeout+answerMargin))
	}
	var errs []error
	for _, f := range futures {
		res, err := f.wait(ctx)
		if err == nil {
			if r, ok := res.(*actors.SendResponse); ok && r.Err != nil {
				// Local recipients have it; other nodes may not.
				err = clientError("message", r.Err)
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// shorten cuts a name that goes into an error text to at most 64 bytes
// (on a rune boundary), marking the cut: names can be long, errors
// should not be.
func shorten(name string) string {
	const max = 64
	if len(name) <= max {
		return name
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut] + "..."
}
