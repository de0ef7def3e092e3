// Package actors holds the protoactor-go actors of a hubfabric node: one
// hub actor per hub (the node's registry of its connections, users and
// groups, and its router), one group actor per group with local members,
// one connection actor per client, and the backplane bridge.
//
// Most programs use them through package hub. A program that runs its own
// actors in the node's actor system (hub.Config.ActorSystem) may talk to a
// hub actor directly: get its PID from hub.Node.HubPID and send it the
// messages of this file, SendRequest and GroupRequest, with
// ctx.Request/RequestFuture; the answers are *SendResponse and
// *GroupResponse. Every other message of the package is internal.
package actors

import (
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/protocol"
)

// RouteKind names who a send is for.
type RouteKind int

// Route kinds.
const (
	// RouteAll: every connection of the hub, on every node.
	RouteAll RouteKind = iota + 1
	// RouteConnection: the connection whose id is Route.Name.
	RouteConnection
	// RouteGroup: the members of the group Route.Name.
	RouteGroup
	// RouteUser: every connection of the user id Route.Name.
	RouteUser
)

// Route is one send target: all connections, one connection, one group or
// one user, minus the Excluded connection ids (for All and Group).
type Route struct {
	Kind     RouteKind
	Name     string
	Excluded []string
}

func (r Route) excludes(connID string) bool {
	for _, e := range r.Excluded {
		if e == connID {
			return true
		}
	}
	return false
}

// SendRequest asks a hub actor to make every connection on Route run a
// client method. Build it with NewSendRequest. The hub actor answers with a
// *SendResponse once its node's recipients have the message queued and, if
// another node may host a recipient, the backplane accepted it.
type SendRequest struct {
	Route   Route
	payload *payload
}

// NewSendRequest returns the request that invokes target(args...) on the
// clients of route. The invocation is serialized here, once per protocol;
// the bytes are shared by every recipient. It fails when target is empty,
// the route is not one (an unknown kind, or no name for a connection, group
// or user), or an argument cannot be encoded.
func NewSendRequest(route Route, target string, args ...any) (*SendRequest, error) {
	if target == "" {
		return nil, errors.New("actors: send needs a target method name")
	}
	if err := route.check(); err != nil {
		return nil, err
	}
	inv := &protocol.Invocation{Target: target, Arguments: args}
	js, err := protocol.JSON.AppendMessage(nil, inv)
	if err != nil {
		return nil, fmt.Errorf("actors: cannot encode the arguments of %q as JSON: %w", target, err)
	}
	mp, err := protocol.MessagePack.AppendMessage(nil, inv)
	if err != nil {
		return nil, fmt.Errorf("actors: cannot encode the arguments of %q as MessagePack: %w", target, err)
	}
	return &SendRequest{Route: route, payload: &payload{json: js, msgpack: mp}}, nil
}

// SendResponse answers SendRequest. Err is nil, or wraps
// ErrNotDeliveredRemotely (the node's own recipients have the message,
// other nodes may not).
type SendResponse struct{ Err error }

// GroupAction is an add or a remove.
type GroupAction int

// Group actions.
const (
	GroupAdd GroupAction = iota + 1
	GroupRemove
)

// GroupRequest adds a connection to a group or removes it, wherever the
// connection lives. A hub actor answers with a *GroupResponse once the
// change is in effect (for an add: once the connection's node is
// subscribed to the group).
type GroupRequest struct {
	Action       GroupAction
	ConnectionID string
	Group        string
}

// GroupResponse answers GroupRequest. Err is nil; or wraps
// ErrUnknownConnection or ErrNotDeliveredRemotely; or says that the node
// owning the connection refused the change or is shutting down.
type GroupResponse struct{ Err error }

// Errors in a SendResponse or GroupResponse; compare with errors.Is. Their
// texts are fit for clients: details (addresses, transport errors) go to
// the node's log.
var (
	// ErrNotDeliveredRemotely: other nodes could not be reached because the
	// backplane is unavailable. It wraps backplane.ErrUnavailable.
	ErrNotDeliveredRemotely error = notDeliveredRemotely{}
	// ErrUnknownConnection: no node has a connection with that id (none
	// answered within the group acknowledgement timeout, or no other node
	// listens at all).
	ErrUnknownConnection = errors.New("unknown connection")
	// ErrLimitExceeded: a bound of the node (a group name's length, the
	// groups of one connection) refused the request; the error's text
	// names the bound.
	ErrLimitExceeded = errors.New("limit exceeded")
)

type notDeliveredRemotely struct{}

func (notDeliveredRemotely) Error() string {
	return "not delivered to other nodes: the backplane is unavailable"
}
func (notDeliveredRemotely) Unwrap() error { return backplane.ErrUnavailable }

// payload is one hub message serialized once per protocol. The same
// payload (and its byte slices) is shared, read-only, by every recipient.
type payload struct {
	json    []byte // framed JSON record
	msgpack []byte // framed MessagePack record
}

// deliver queues p for o, in o's protocol. Deliveries go straight to the
// connection's outbound queue (safe for concurrent use) rather than
// through its actor: a mailbox hop per recipient is the largest cost of
// fan-out after the socket write. Order per route holds because a route's
// fan-out runs in one actor; a caller's Completion still follows its
// sends, since a send is answered only after its local fan-out.
func deliver(o fabric.Outlet, p *payload) {
	_ = o.Enqueue(p.record(o))
}

// record is p in o's protocol.
func (p *payload) record(o fabric.Outlet) []byte {
	if o.Protocol().TransferFormat() == protocol.TransferBinary {
		return p.msgpack
	}
	return p.json
}

// batch is a fan-out's outlets that hold deferred records (fabric.Batcher)
// until the actor's mailbox has no more sends: the actor sends itself a
// flushBatch after the first, and flushes every outlet when it arrives, so
// the sends that queued up meanwhile reach each connection in one write.
// Owned by one actor.
type batch struct {
	outlets []fabric.Batcher
	asked   bool            // a flushBatch is on its way
	sends   int             // sends deferred since the last flush
	last    *payload        // the last of them
	flusher *fabric.Flusher // writes batches while the node is behind; nil: flush always writes
}

// flushBatch is the message an actor sends itself to flush its batch.
type flushBatch struct{}

// deliver queues p for o: deferred when o batches, at once otherwise.
func (b *batch) deliver(ctx actor.Context, o fabric.Outlet, p *payload) {
	bo, ok := o.(fabric.Batcher)
	if !ok {
		deliver(o, p)
		return
	}
	if p != b.last {
		b.last = p
		b.sends++
	}
	if flush, _ := bo.EnqueueDeferred(p.record(o)); flush {
		b.outlets = append(b.outlets, bo)
		if !b.asked {
			b.asked = true
			ctx.Send(ctx.Self(), flushBatch{})
		}
	}
}

// flush writes every outlet's deferred records on the actor's goroutine
// while the node keeps up: the batch holds one send (none queued up behind
// it in the mailbox) and the flusher is idle. Otherwise the node is behind
// and the flusher writes them: the actor goes back to its mailbox, and the
// records that pile up meanwhile share the flusher's writes.
func (b *batch) flush() {
	b.asked = false
	behind := b.sends > 1
	b.sends, b.last = 0, nil
	if b.flusher != nil && (behind || b.flusher.Busy()) {
		b.flusher.Add(b.outlets)
	} else {
		for _, o := range b.outlets {
			o.Flush()
		}
	}
	clear(b.outlets)
	b.outlets = b.outlets[:0]
}

// To returns a request with the same serialized invocation for another
// route: the bytes are shared, not copied. The hub actor checks the route
// as for NewSendRequest's.
func (r *SendRequest) To(route Route) *SendRequest {
	return &SendRequest{Route: route, payload: r.payload}
}

// check reports why a hub actor cannot take r: it was not made by
// NewSendRequest, or its route is not one.
func (r *SendRequest) check() error {
	if r.payload == nil {
		return errors.New("actors: a SendRequest must be made with NewSendRequest")
	}
	return r.Route.check()
}

func (r Route) check() error {
	switch r.Kind {
	case RouteAll:
		return nil
	case RouteConnection, RouteGroup, RouteUser:
		if r.Name == "" {
			return errors.New("actors: a route to a connection, group or user needs its name")
		}
		return nil
	}
	return fmt.Errorf("actors: unknown route kind %d", r.Kind)
}

// check reports why a hub actor cannot take r.
func (r *GroupRequest) check() error {
	if r.Action != GroupAdd && r.Action != GroupRemove {
		return fmt.Errorf("actors: unknown group action %d", r.Action)
	}
	if r.ConnectionID == "" || r.Group == "" {
		return errors.New("actors: a group change needs a connection id and a group name")
	}
	return nil
}
