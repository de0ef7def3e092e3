// Package actors holds the protoactor-go actors of a hubfabric node: one
// connection actor per client, one group actor per group with local
// members, one hub actor per hub, and the backplane bridge. This file lists
// the process-local messages they exchange.
package actors

import (
	"context"

	"github.com/hubfabric/hubfabric/protocol"
)

// Payload is one hub message serialized once per protocol. The same Payload
// (and its byte slices) is shared, read-only, by every recipient.
type Payload struct {
	JSON        []byte // framed JSON record
	MessagePack []byte // framed MessagePack record
}

// For returns the framed bytes for the protocol p.
func (p *Payload) For(proto protocol.HubProtocol) []byte {
	if proto.TransferFormat() == protocol.TransferBinary {
		return p.MessagePack
	}
	return p.JSON
}

// RouteKind names who a send is for.
type RouteKind int

// Route kinds; each maps to one backplane channel kind.
const (
	RouteAll RouteKind = iota + 1
	RouteConnection
	RouteGroup
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

// SendRequest asks a hub actor to deliver Payload on Route: to local
// recipients directly and, through the bridge, to other nodes (Envelope is
// the already-marshalled backplane envelope). The reply is a *SendResponse,
// sent once local fan-out is done and the publish was accepted or failed.
type SendRequest struct {
	Route    Route
	Payload  *Payload
	Channel  string // the route's backplane channel
	Envelope []byte // nil: deliver locally only
}

// SendResponse answers SendRequest; Err wraps backplane.ErrUnavailable when
// other nodes could not be reached.
type SendResponse struct{ Err error }

// remoteDelivery is a payload that arrived from another node.
type remoteDelivery struct {
	Route   Route
	Payload *Payload
}

// GroupAction is an add or a remove.
type GroupAction int

// Group actions.
const (
	GroupAdd GroupAction = iota + 1
	GroupRemove
)

// GroupRequest adds a connection to a group or removes it, wherever the
// connection lives. The reply is a *GroupResponse once the change is in
// effect (for a local add: once the backplane confirmed the group
// subscription), or an error after the acknowledgement timeout when no node
// owns the connection.
type GroupRequest struct {
	Action       GroupAction
	ConnectionID string
	Group        string

	hub string // set by the hub actor before it asks the bridge
}

// GroupResponse answers GroupRequest.
type GroupResponse struct{ Err error }

// Outlet is the socket side of a connection as the connection actor sees
// it; transport.Conn implements it. Safe for concurrent use.
type Outlet interface {
	ID() string
	Protocol() protocol.HubProtocol
	// Enqueue queues a framed record without copying it.
	Enqueue(record []byte) error
	// Send encodes and queues one message.
	Send(m protocol.Message) error
	// Close sends a Close message and closes the socket.
	Close(errMsg string, allowReconnect bool)
}

// Call is one hub method invocation handed to the Invoker.
type Call struct {
	// Message is the *protocol.Invocation or *protocol.StreamInvocation.
	Message protocol.Message
	// Uploads are the client-to-server streams named by the message's
	// StreamIDs, in order.
	Uploads []*Upload
	// Reply sends a message (StreamItem, Completion) to the caller, ordered
	// after every delivery the connection received before it.
	Reply func(protocol.Message)
	// Release frees the call's slot in the parallel-invocation limit; the
	// Invoker calls it when the method itself has returned (streams may go
	// on). It is idempotent and also called when Done is.
	Release func()
	// Done must be called exactly once, when the call is completely over.
	Done func()
}

// Invoker runs hub methods for a connection; the facade implements it.
type Invoker interface {
	// Connected runs the hub's OnConnected hook; a non-nil error refuses the
	// connection with that error. ctx ends with the connection.
	Connected(ctx context.Context, conn *ConnectionInfo) error
	// Invoke runs one call on the calling goroutine (a goroutine the
	// connection actor started for it). ctx is cancelled when the client
	// cancels a stream or the connection ends.
	Invoke(ctx context.Context, conn *ConnectionInfo, call *Call)
	// Disconnected runs the hub's OnDisconnected hook; err is why the
	// connection ended (nil for a normal close).
	Disconnected(ctx context.Context, conn *ConnectionInfo, err error)
}

// ConnectionInfo describes a connection to the Invoker. Fields are set
// before the first call and never change.
type ConnectionInfo struct {
	ID     string
	UserID string
	Claims map[string]any
	Hub    string
	// Items holds per-connection values for the application; it is only
	// touched by the connection's calls, which run one at a time unless the
	// parallel limit is raised.
	Items map[string]any
	// Outlet is the connection's socket side.
	Outlet Outlet
	// Abort closes the connection with an error (allowReconnect false).
	Abort func(errMsg string)

	uploads *uploadRegistry
}

// ConnectRequest asks a hub actor to attach a new connection. The reply is
// a *ConnectResponse once its channels are subscribed.
type ConnectRequest struct {
	Info    *ConnectionInfo
	Invoker Invoker
}

// ConnectResponse answers ConnectRequest. Inbound receives the client's
// messages.
type ConnectResponse struct {
	Inbound *Inbound
	Err     error
}

// ClientMessage carries one parsed message from the client's socket to its
// connection actor, with the upload streams an invocation declared.
type ClientMessage struct {
	Message protocol.Message
	Uploads []*Upload
}

// ClientClosed tells the connection actor its socket ended; Err is nil for
// a normal close.
type ClientClosed struct{ Err error }

// CloseAll asks a hub actor to close every local connection with a Close
// message (allowReconnect true, as on server shutdown); the reply is
// *CloseAllResponse once all were asked.
type CloseAll struct{ Reason string }

// CloseAllResponse answers CloseAll with the number of connections closed.
type CloseAllResponse struct{ Count int }

// WaitNoConnections asks a hub actor to answer (with *NoConnections) once
// it has no connection actors left, for example after CloseAll when every
// OnDisconnected hook has run.
type WaitNoConnections struct{}

// NoConnections answers WaitNoConnections.
type NoConnections struct{}
