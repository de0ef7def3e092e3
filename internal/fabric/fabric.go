// Package fabric holds the contracts between hubfabric's own packages that
// applications never see: what the facade (package hub) and the connection
// code tell the actors, and what the actors need from them. A connection's
// socket side (Outlet), the hub methods (Invoker), the parsed client
// messages on their way in (Inbound, Uploads), the messages the facade sends
// to a hub actor, the wiring of a node's actor tree (NodeConfig, Tree) and
// its counters.
package fabric

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/metrics"
	"github.com/hubfabric/hubfabric/internal/seam"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// Batcher is an Outlet that can hold records for a batch: a fan-out
// queues each send's record with EnqueueDeferred and, once its mailbox has
// no more sends, calls Flush on every outlet that asked for it, so a
// connection gets one write per burst instead of one per send.
// *conn.Conn is one. Safe for concurrent use.
type Batcher interface {
	// EnqueueDeferred queues a framed record without writing it yet; flush
	// is true when the caller must call Flush afterwards.
	EnqueueDeferred(record []byte) (flush bool, err error)
	// Flush writes what EnqueueDeferred queued.
	Flush()
}

// Outlet is the socket side of a connection as the actors see it: the
// connection's bounded outbound queue. Safe for concurrent use.
type Outlet interface {
	ID() string
	Protocol() protocol.HubProtocol
	// Enqueue queues a framed record without copying it.
	Enqueue(record []byte) error
	// Send encodes and queues one message.
	Send(m protocol.Message) error
	// Close sends a Close message and closes the socket.
	Close(errMsg string, allowReconnect bool)
	// Done is closed once the connection's socket side has ended.
	Done() <-chan struct{}
}

// Call is one hub method invocation handed to the Invoker.
type Call struct {
	// Message is the *protocol.Invocation or *protocol.StreamInvocation.
	Message protocol.Message
	// Uploads are the client-to-server streams named by the message's
	// StreamIDs, in order.
	Uploads []*Upload
	// Reply encodes a message (StreamItem, Completion) on the calling
	// goroutine and sends it to the caller, ordered after every delivery
	// the connection received before it. It returns the encoding error, in
	// which case nothing was sent.
	Reply func(protocol.Message) error
	// Answer sends the call's Completion already encoded (with
	// Outlet.Protocol().AppendMessage), ordered as Reply orders. An
	// Invoker that acts between knowing its Completion encodes and the
	// client seeing it (counting the call's outcome) uses it instead of
	// Reply.
	Answer func(record []byte)
	// Release frees the call's slot in the parallel-invocation limit. The
	// Invoker calls it once the call's Completion is sent (so the client's
	// next call starts after it, as in ASP.NET), or, for a server stream
	// or a method reading uploads, when the method itself returned or
	// began (those go on). It is idempotent and also called when Done is.
	Release func()
	// Cancel ends the ctx given to Invoke with a cause (nil: context.Canceled);
	// it is idempotent, and Done calls it. The Invoker ends its work's
	// context with it rather than deriving one of its own.
	Cancel context.CancelCauseFunc
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
	// Abort closes the connection with an error (allowReconnect false). The
	// connection actor sets it when it starts.
	Abort func(errMsg string)
}

// ConnectRequest asks a hub actor to attach a new connection. The reply is
// a *ConnectResponse once the connection's channels are subscribed.
type ConnectRequest struct {
	Info    *ConnectionInfo
	Invoker Invoker
	// Moved is the id of the hand-over (TakeOverResponse.MoveID) when the
	// connection moved here from another node: it is attached without
	// OnConnected (it ran on the first node), in its groups, and its
	// client's messages wait until the hand-over is complete.
	Moved uint64
}

// ConnectResponse answers ConnectRequest. Inbound takes the client's
// messages.
type ConnectResponse struct {
	Inbound *Inbound
	Err     error
}

// Mover is implemented by an Outlet that can be handed over to another
// node (internal/conn's Conn of a stateful connection): see
// conn.Conn.HandOver.
type Mover interface {
	HandOver(forward func(rec []byte), done func(conn.StatefulState, error))
}

// TakeOverRequest asks a hub actor to take over a stateful connection that
// another node owns: its client reconnected here. The answer is a
// *TakeOverResponse once the owner handed over the connection's state (or
// refused, or did not answer within the group acknowledgement timeout).
// A successful answer is followed by a ConnectRequest with Moved set, or
// by a TakeOverAbort.
type TakeOverRequest struct {
	ConnectionID string
	// UserID is who the reconnecting client authenticated as; the owner
	// refuses a different user.
	UserID string
}

// TakeOverResponse answers TakeOverRequest: the moving connection's
// protocol and stateful state, or why it cannot move (Err).
type TakeOverResponse struct {
	MoveID   uint64
	Protocol protocol.HubProtocol
	State    conn.StatefulState
	Err      error
}

// TakeOverAbort tells a hub actor that the transport gave up a hand-over
// it was granted (the state did not restore, the client's socket failed):
// the hub ends it and tells the old owner.
type TakeOverAbort struct {
	ConnectionID string
	MoveID       uint64
	Reason       string
}

// AbandonConnect tells a hub actor that the facade stopped waiting for
// the ConnectRequest of connection ID (it timed out): if the connection was
// attached meanwhile, it is ended as if its socket had closed, so its
// OnDisconnected runs and nothing of it stays behind.
type AbandonConnect struct{ ID string }

// ClientMessage carries one parsed message from the client's socket to its
// connection actor, with the upload streams an invocation declared.
type ClientMessage struct {
	Message protocol.Message
	Uploads []*Upload
	// Size is what an invocation took from the connection's Pending bound;
	// the connection actor releases it when the call starts or is refused.
	Size int
	// Refused, when not empty, is why the reader already refused the
	// invocation (its upload streams would pass the connection's bound);
	// the actor answers it with this error.
	Refused string
}

// ClientClosed tells the connection actor its socket ended; Err is nil for
// a normal close.
type ClientClosed struct{ Err error }

// CloseAll asks a hub actor to close every local connection with a Close
// message carrying Reason (allowReconnect true, as on server shutdown); the
// reply is *CloseAllResponse once every connection was told.
type CloseAll struct{ Reason string }

// CloseAllResponse answers CloseAll.
type CloseAllResponse struct{}

// WaitNoConnections asks a hub actor to answer (with *NoConnections) once
// it has no connection actors left, for example after CloseAll when every
// OnDisconnected hook has run.
type WaitNoConnections struct{}

// NoConnections answers WaitNoConnections.
type NoConnections struct{}

// NodeConfig is the fully defaulted configuration of one node's actor
// tree; package hub fills every field from its Config.
type NodeConfig struct {
	NodeID    string
	Hubs      []string
	Backplane backplane.Backplane
	// BackplaneTimeout bounds one batch of publishes and one subscription
	// change.
	BackplaneTimeout time.Duration
	// GroupAckTimeout bounds the wait for the node owning a connection to
	// acknowledge a group change.
	GroupAckTimeout time.Duration
	// MaxBatch caps the messages published in one batch.
	MaxBatch int
	// MaxParallelInvocations is how many hub methods of one client run at
	// a time.
	MaxParallelInvocations int
	// StreamBufferCapacity is how many items of one upload stream may wait
	// for the hub method.
	StreamBufferCapacity int
	// MaxPendingInvocations and MaxPendingInvocationBytes bound the
	// invocations of one client that wait for a free slot; past either the
	// client's reader waits (see Inbound).
	MaxPendingInvocations     int
	MaxPendingInvocationBytes int
	// MaxStreamsPerConnection bounds the server streams and upload streams
	// one client has open at a time.
	MaxStreamsPerConnection int
	// MaxGroupsPerConnection bounds the groups one connection is a member
	// of on its node; MaxGroupNameBytes bounds a group name.
	MaxGroupsPerConnection int
	MaxGroupNameBytes      int
	Seams                  seam.Seams
	Logger                 *slog.Logger
	Counters               *Counters
	// Flusher writes what the hub and group actors' fan-outs deferred;
	// nil: each actor writes its batch itself when its mailbox runs dry.
	Flusher *Flusher
	// PublishDuration observes how long each batch publish to the backplane
	// took, in seconds; nil for none.
	PublishDuration metrics.Observer
	// Mailboxes tracks the mailboxes of the hub, group and bridge actors,
	// for their depths; nil for none (the actors use the default mailbox
	// untracked).
	Mailboxes *metrics.Mailboxes
	// OnBackplaneEvent is called for every backplane health event after it
	// was logged and counted; nil for none.
	OnBackplaneEvent func(backplane.Event)
	// ServeHTTP serves a long-polling or SSE request another node
	// forwarded (it may wait, a poll up to the poll timeout; ctx ends when
	// the node stops) and returns the answer, or nil when this node does
	// not own the connection (the owner answers). Nil: such requests are
	// ignored.
	ServeHTTP func(ctx context.Context, req *fabricv1.HttpRequest) *fabricv1.HttpResponse
}

// Tree is a spawned node: its bridge and hub actors, the handler to start
// the backplane with, and the channels to subscribe before it serves (the
// node's own and each hub's "all").
type Tree struct {
	Bridge   *actor.PID
	Hubs     map[string]*actor.PID
	Handler  backplane.Handler
	Channels []string
}

// Counters counts what a node's bridge saw; safe for concurrent use.
type Counters struct {
	Published     atomic.Uint64 // messages handed to the backplane
	PublishFailed atomic.Uint64 // messages whose publish failed
	Received      atomic.Uint64 // envelopes received from other nodes
	Malformed     atomic.Uint64 // payloads that were not valid envelopes
	Gaps          atomic.Uint64 // EventGap reports
	Down          atomic.Uint64 // EventDown reports

	// Stage depths, read as gauges: where a backlog sits.

	// PendingInvocations is the invocations read from clients' sockets
	// that have not started (waiting for their connection's previous call).
	PendingInvocations atomic.Int64
	// ReadsPaused is the connections whose socket is not read because
	// their pending invocations reached the bound.
	ReadsPaused atomic.Int64
	// PublishQueued is the sends handed to the bridge whose batch publish
	// has not completed (queued behind a batch in flight, or in it).
	PublishQueued atomic.Int64
}

// Hooks reach the parts of package hub that the module's own test
// harness (the testkit) needs and applications must not see. Package hub
// sets them when it is initialized.
var Hooks struct {
	// SetSeams stores s in the *hub.Config that cfg points to, so the node
	// built from it runs on s. It panics if cfg is not a *hub.Config.
	SetSeams func(cfg any, s seam.Seams)
	// Attach connects a client whose socket side is out to hub on node (a
	// started *hub.Node), as the node's own transport does after a
	// handshake, and returns where the client's parsed messages go.
	Attach func(ctx context.Context, node any, hub, id string, identity auth.Identity, out Outlet) (*Inbound, error)
	// ConnOptions returns the connection settings of node (a started
	// *hub.Node) for a connection id of protocol p: its outbound bound,
	// keep-alive, client timeout and logger, on the real runtime (the
	// testkit puts its own in).
	ConnOptions func(node any, id string, p protocol.HubProtocol) conn.Options
	// Stateful returns node's stateful reconnect settings: whether it is
	// on, the unacknowledged bytes kept per connection, and the window a
	// dropped connection waits for its client.
	Stateful func(node any) (on bool, bufferSize int, window time.Duration)
	// TakeOver moves the stateful connection id of hub to node (its client
	// reconnected there), as the node's transport does: it returns the
	// connection's protocol and state from its old node, attach (which
	// connects the connection rebuilt from that state, see Attach), and
	// abort (which gives up the move before attach).
	TakeOver func(ctx context.Context, node any, hub, id string, identity auth.Identity) (p protocol.HubProtocol, state conn.StatefulState,
		attach func(ctx context.Context, c *conn.Conn) (conn.Session, error), abort func(reason string), err error)
}
