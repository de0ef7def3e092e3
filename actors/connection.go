package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// connection is the actor of one client. It runs the client's hub methods
// in arrival order (up to the parallel limit, each on its own goroutine so
// the actor never blocks), ends upload streams with their calls, cancels
// streams on request, writes the calls' replies to the outbound queue in the
// order they reach its mailbox, and closes the connection when asked.
// Deliveries from sends do not pass through it: the hub and group actors
// queue them on the outlet directly.
type connection struct {
	info       *fabric.ConnectionInfo
	invoker    fabric.Invoker
	uploads    *fabric.Uploads
	pending    *fabric.Pending
	parallel   int
	maxStreams int
	rt         seam.Runtime

	ctx       context.Context
	cancel    context.CancelFunc
	connected bool // OnConnected finished
	closing   bool
	running   int
	streams   int // server and upload streams of started calls
	waiting   []*queuedCall
	ids       map[string]bool        // invocation ids of waiting calls and of running ones not yet answered
	calls     map[string]*activeCall // running calls, by invocation id
	wg        sync.WaitGroup

	// results are the client invocations waiting for the client's
	// Completion (results.go); nil when none.
	results map[string]*pendingResult

	// receiving is set while Receive runs: a Receive that panicked leaves
	// it set, which is how Stopping knows the actor failed.
	receiving bool

	// Hand-over (move.go).
	moved   bool // it moved here: OnConnected ran on another node
	leaving bool // it is moving away: say moveDrained once no call is left
	live    int  // started calls not yet done
}

// queuedCall is an invocation waiting for a free slot. Its upload streams
// exist from the moment it arrived, so items the client sends meanwhile are
// kept.
type queuedCall struct {
	msg     protocol.Message
	id      string
	uploads []*fabric.Upload
	size    int // taken from the connection's Pending bound
}

// streams is how many streams the call opens: its uploads, plus one for
// a server stream.
func (q *queuedCall) streams() int {
	n := len(q.uploads)
	if _, ok := q.msg.(*protocol.StreamInvocation); ok {
		n++
	}
	return n
}

// activeCall is a running call with an invocation id. Only the actor
// touches it.
type activeCall struct {
	id      string // "" for a call the client does not wait for
	cancel  context.CancelCauseFunc
	streams int // streams it holds in the connection's count until answered or done
}

// call lifecycle messages the actor sends to itself.
type (
	connectedDone struct{ err error }
	callReleased  struct{}
	callDone      struct {
		call    *activeCall
		uploads []*fabric.Upload
	}
	// callReply is a reply; answered is set for a call's Completion, after
	// which the client may reuse the call's id.
	callReply struct {
		record   []byte
		answered *activeCall
	}
	disconnectDone  struct{}
	abortConnection struct{ msg string }
	closeConnection struct{ reason string }
)

// newConnectionProps are the Props a hub spawns its connection actors
// with, made once per hub: next hands each spawn its actor (the hub sets it
// just before SpawnNamed, which calls the producer on the hub's
// goroutine). Per-connection Props cost about 300 bytes for as long as the
// connection lives. A connection actor is never restarted
// (hub.HandleFailure stops it), so the producer runs once per spawn.
//
// A connection actor gets protoactor's lock-free mailbox: it sees a few
// messages per client call, and its idle cost counts once per connection.
// The lock-free queue holds one 24-byte node when empty (the default ring
// starts at 10 slots, about 230 bytes more, and never shrinks), at one
// small allocation per message.
func newConnectionProps(cfg *fabric.NodeConfig, next func() *connection) *actor.Props {
	return cfg.Seams.Props(func() actor.Actor {
		c := next()
		if c == nil {
			panic("actors: a connection actor was produced outside its hub's spawn (restarted?)")
		}
		return c
	}).Configure(actor.WithMailbox(connectionMailbox))
}

var connectionMailbox = actor.UnboundedLockfree()

// Receive dispatches.
func (c *connection) Receive(ctx actor.Context) {
	failed := c.receiving // the last Receive panicked
	c.receiving = true
	c.receive(ctx, failed)
	c.receiving = false
}

func (c *connection) receive(ctx actor.Context, failed bool) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.onStarted(ctx)
	case *fabric.ClientMessage:
		c.onClientMessage(ctx, m)
	case *callReply:
		_ = c.info.Outlet.Enqueue(m.record)
		if ac := m.answered; ac != nil {
			// Answered: for the client the call and its streams are over.
			c.streams -= ac.streams
			ac.streams = 0
			if ac.id != "" && c.calls[ac.id] == ac {
				// The id is the client's again; a later call may reuse it.
				delete(c.calls, ac.id)
				c.freeID(ac.id)
			}
		}
	case *callReleased:
		c.running--
		c.startWaiting(ctx)
	case *callDone:
		c.onCallDone(m)
		c.drainedIfLeaving(ctx)
	case *leave:
		c.onLeave(ctx)
	case *arrive:
		c.connected = true
		c.startWaiting(ctx)
	case *quit:
		c.closing = true
		c.failResults(ctx, ErrClientDisconnected)
		c.waiting = nil
		c.pending.Close()
		c.uploads.CloseAll(errors.New("connection closed"))
		ctx.Stop(ctx.Self())
	case *connectedDone:
		c.onConnectedDone(ctx, m.err)
	case *abortConnection:
		c.info.Outlet.Close(m.msg, false)
	case *closeConnection:
		c.info.Outlet.Close(m.reason, true)
	case *clientInvoke:
		c.onClientInvoke(ctx, m)
	case *cancelClientInvoke:
		c.onCancelClientInvoke(ctx, m)
	case *fabric.ClientClosed:
		c.onClosed(ctx, m.Err)
	case *disconnectDone:
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		if failed {
			c.failed(ctx)
		}
		c.cancel()
	case *actor.Stopped:
		c.rt.Join(&c.wg)
	}
}

func (c *connection) onStarted(ctx actor.Context) {
	c.ctx, c.cancel = context.WithCancel(context.Background())
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.info.Abort = func(msg string) { root.Send(self, &abortConnection{msg: msg}) }
	if c.moved {
		return // connected once the hand-over is complete (arrive)
	}
	c.wg.Add(1)
	c.rt.Go(func() {
		defer c.wg.Done()
		err := c.invoker.Connected(c.ctx, c.info)
		root.Send(self, &connectedDone{err: err})
	})
}

func (c *connection) onConnectedDone(ctx actor.Context, err error) {
	if err != nil {
		ctx.Logger().Info("connection refused by OnConnected", "conn_id", c.info.ID, "err", err)
		c.info.Outlet.Close("Connection closed with an error: "+err.Error(), false)
		return
	}
	c.connected = true
	c.startWaiting(ctx)
	c.drainedIfLeaving(ctx)
}

func (c *connection) onClientMessage(ctx actor.Context, cm *fabric.ClientMessage) {
	if c.closing {
		return
	}
	if cm.Refused != "" {
		id, _ := fabric.InvocationOf(cm.Message)
		c.refuse(&queuedCall{msg: cm.Message, id: id, uploads: cm.Uploads, size: cm.Size}, cm.Refused)
		return
	}
	switch m := cm.Message.(type) {
	case *protocol.Invocation:
		c.enqueue(ctx, &queuedCall{msg: m, id: m.InvocationID, uploads: cm.Uploads, size: cm.Size})
	case *protocol.StreamInvocation:
		c.enqueue(ctx, &queuedCall{msg: m, id: m.InvocationID, uploads: cm.Uploads, size: cm.Size})
	case *protocol.CancelInvocation:
		if ac := c.calls[m.InvocationID]; ac != nil {
			ac.cancel(nil)
			return
		}
		c.cancelWaiting(m.InvocationID)
	case *protocol.Completion:
		c.onClientCompletion(ctx, m)
	case *protocol.Close:
		// The client closes its socket next; ClientClosed follows.
	}
}

func (c *connection) enqueue(ctx actor.Context, q *queuedCall) {
	if q.id != "" {
		if c.ids[q.id] {
			// As ASP.NET: the first call keeps the id (and can still be
			// cancelled); the second is refused.
			c.refuse(q, fmt.Sprintf("Invocation ID '%s' is already in use.", q.id))
			return
		}
		if c.ids == nil {
			c.ids = map[string]bool{} // made on a connection's first invocation with an id
		}
		c.ids[q.id] = true
	}
	c.waiting = append(c.waiting, q)
	c.startWaiting(ctx)
}

// refuse answers a call that will not run with a Completion carrying msg
// (when the client waits for one; "" for a plain end) and lets go of what
// it holds.
func (c *connection) refuse(q *queuedCall, msg string) {
	c.pending.Release(q.size)
	for _, u := range q.uploads {
		c.uploads.Remove(u)
	}
	if q.id != "" {
		_ = c.info.Outlet.Send(&protocol.Completion{InvocationID: q.id, Error: msg})
	}
}

// cancelWaiting ends a call the client cancelled before it started (it
// waited for a slot, or for OnConnected): it never runs, and it is
// answered as a cancelled stream is, with a Completion.
func (c *connection) cancelWaiting(id string) {
	for i, q := range c.waiting {
		if q.id == id {
			c.waiting = append(c.waiting[:i], c.waiting[i+1:]...)
			c.freeID(id)
			c.refuse(q, "")
			return
		}
	}
}

// startWaiting starts queued calls while the parallel limit allows.
func (c *connection) startWaiting(ctx actor.Context) {
	for c.connected && !c.closing && len(c.waiting) > 0 && c.running < c.parallel {
		q := c.waiting[0]
		c.waiting[0] = nil
		c.waiting = c.waiting[1:]
		if n := q.streams(); n > 0 && c.streams+n > c.maxStreams {
			if q.id != "" {
				c.freeID(q.id)
			}
			_, target := fabric.InvocationOf(q.msg)
			c.refuse(q, fmt.Sprintf("Failed to invoke '%s': the connection has %d streams open and the limit is %d (MaxStreamsPerConnection).", target, c.streams, c.maxStreams))
			continue
		}
		c.start(ctx, q)
	}
	if len(c.waiting) == 0 {
		c.waiting = nil
	}
}

func (c *connection) start(ctx actor.Context, q *queuedCall) {
	c.pending.Release(q.size)
	callCtx, cancel := context.WithCancelCause(c.ctx)
	ac := &activeCall{id: q.id, cancel: cancel, streams: q.streams()}
	if q.id != "" {
		if c.calls == nil {
			c.calls = make(map[string]*activeCall) // most connections make no call with an id
		}
		c.calls[q.id] = ac
	}
	c.running++
	c.live++
	c.streams += ac.streams
	self, root := ctx.Self(), ctx.ActorSystem().Root
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { root.Send(self, &callReleased{}) }) }
	p := c.info.Outlet.Protocol()
	answer := func(rec []byte) { root.Send(self, &callReply{record: rec, answered: ac}) }
	call := &fabric.Call{
		Message: q.msg,
		Uploads: q.uploads,
		// Encoded here, on the call's goroutine: the actor only queues the
		// bytes, and a result that cannot be encoded fails the call
		// instead of the actor.
		Reply: func(m protocol.Message) error {
			rec, err := p.AppendMessage(nil, m)
			if err != nil {
				return err
			}
			if _, final := m.(*protocol.Completion); final {
				answer(rec)
			} else {
				root.Send(self, &callReply{record: rec})
			}
			return nil
		},
		Answer:  answer,
		Release: release,
		Cancel:  cancel,
	}
	call.Done = func() {
		release()
		cancel(nil)
		root.Send(self, &callDone{call: ac, uploads: q.uploads})
	}
	c.wg.Add(1)
	c.rt.Go(func() {
		defer c.wg.Done()
		c.invoker.Invoke(callCtx, c.info, call)
	})
}

func (c *connection) onCallDone(m *callDone) {
	c.live--
	ac := m.call
	ac.cancel(nil)
	c.streams -= ac.streams
	ac.streams = 0
	// The id may already belong to a newer call (reused after this one's
	// Completion).
	if ac.id != "" && c.calls[ac.id] == ac {
		delete(c.calls, ac.id)
		c.freeID(ac.id)
	}
	for _, u := range m.uploads {
		c.uploads.Remove(u)
	}
}

func (c *connection) onClosed(ctx actor.Context, err error) {
	c.disconnect(ctx, err, true)
}

// disconnect ends the connection's calls as when its client leaves and
// runs OnDisconnected with err on a goroutine of its own (Stopped waits
// for it); then, with stop, the actor stops itself (disconnectDone). It
// does nothing once the connection is closing.
func (c *connection) disconnect(ctx actor.Context, err error, stop bool) {
	if c.closing {
		return
	}
	c.closing = true
	c.failResults(ctx, ErrClientDisconnected)
	c.waiting = nil
	c.pending.Close()
	c.uploads.CloseAll(errors.New("connection closed"))
	c.cancel()
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.wg.Add(1)
	c.rt.Go(func() {
		defer c.wg.Done()
		// OnDisconnected gets its own context: the connection's is over,
		// but the hook may still send to others.
		c.invoker.Disconnected(context.Background(), c.info, err)
		if stop {
			root.Send(self, &disconnectDone{})
		}
	})
}

// errConnectionFailed is why OnDisconnected runs for a connection whose
// actor failed (connection.failed).
var errConnectionFailed = errors.New("the connection's actor failed on the server")

// failed ends a connection whose actor panicked and is now stopped by its
// hub (hub.HandleFailure). The client gets a Close with an error and may
// reconnect, and the connection is disconnected with errConnectionFailed,
// unless it was closing already (OnDisconnected then runs already). A
// panic in either step is logged and goes no further: protoactor would
// not finish stopping an actor whose Stopping panicked, and its hub would
// wait for it forever.
func (c *connection) failed(ctx actor.Context) {
	safely := func(step string, fn func()) {
		defer func() {
			if r := recover(); r != nil {
				ctx.Logger().Error("failed connection actor panicked again while stopping", "conn_id", c.info.ID, "step", step, "panic", fmt.Sprint(r))
			}
		}()
		fn()
	}
	safely("close", func() { c.info.Outlet.Close("Connection closed with an error.", true) })
	safely("disconnect", func() { c.disconnect(ctx, errConnectionFailed, false) }) // the actor is stopping
}

// onLeave starts a move away: the client invocations waiting for a result
// fail (the client answers on its new node, which does not know them),
// upload streams end (the client's items go to the new node), and the
// calls go on, their replies forwarded, until none is left.
func (c *connection) onLeave(ctx actor.Context) {
	c.leaving = true
	c.failResults(ctx, fmt.Errorf("%w: it moved to another node", ErrClientDisconnected))
	c.uploads.CloseAll(errors.New("the connection moved to another node"))
	c.drainedIfLeaving(ctx)
}

func (c *connection) drainedIfLeaving(ctx actor.Context) {
	if c.leaving && c.connected && c.live == 0 && len(c.waiting) == 0 {
		c.leaving = false
		ctx.Send(ctx.Parent(), &moveDrained{connID: c.info.ID})
	}
}

// freeID gives an invocation id back to the client; the set goes when it
// is empty, so an idle connection holds none.
func (c *connection) freeID(id string) {
	delete(c.ids, id)
	if len(c.ids) == 0 {
		c.ids = nil
	}
}
