package actors

import (
	"context"
	"errors"
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
	info     *fabric.ConnectionInfo
	invoker  fabric.Invoker
	uploads  *fabric.Uploads
	parallel int
	rt       seam.Runtime

	ctx       context.Context
	cancel    context.CancelFunc
	connected bool // OnConnected finished
	closing   bool
	running   int
	waiting   []*queuedCall
	calls     map[string]context.CancelFunc // by invocation id
	wg        sync.WaitGroup
}

// queuedCall is an invocation waiting for a free slot. Its upload streams
// exist from the moment it arrived, so items the client sends meanwhile are
// kept.
type queuedCall struct {
	msg     protocol.Message
	id      string
	uploads []*fabric.Upload
}

// call lifecycle messages the actor sends to itself.
type (
	connectedDone struct{ err error }
	callReleased  struct{}
	callDone      struct {
		id      string
		uploads []*fabric.Upload
	}
	callReply       struct{ msg protocol.Message }
	disconnectDone  struct{}
	abortConnection struct{ msg string }
	closeConnection struct{ reason string }
)

func newConnectionProps(info *fabric.ConnectionInfo, inv fabric.Invoker, uploads *fabric.Uploads, cfg *fabric.NodeConfig) *actor.Props {
	return cfg.Seams.Props(func() actor.Actor {
		return &connection{info: info, invoker: inv, uploads: uploads, parallel: cfg.MaxParallelInvocations, rt: cfg.Seams.Runtime}
	})
}

// Receive dispatches.
func (c *connection) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.onStarted(ctx)
	case *fabric.ClientMessage:
		c.onClientMessage(ctx, m)
	case *callReply:
		_ = c.info.Outlet.Send(m.msg)
	case *callReleased:
		c.running--
		c.startWaiting(ctx)
	case *callDone:
		c.onCallDone(m)
	case *connectedDone:
		c.onConnectedDone(ctx, m.err)
	case *abortConnection:
		c.info.Outlet.Close(m.msg, false)
	case *closeConnection:
		c.info.Outlet.Close(m.reason, true)
	case *fabric.ClientClosed:
		c.onClosed(ctx, m.Err)
	case *disconnectDone:
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		c.cancel()
	case *actor.Stopped:
		c.rt.Join(&c.wg)
	}
}

func (c *connection) onStarted(ctx actor.Context) {
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.calls = make(map[string]context.CancelFunc)
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.info.Abort = func(msg string) { root.Send(self, &abortConnection{msg: msg}) }
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
}

func (c *connection) onClientMessage(ctx actor.Context, cm *fabric.ClientMessage) {
	if c.closing {
		return
	}
	switch m := cm.Message.(type) {
	case *protocol.Invocation:
		c.enqueue(ctx, &queuedCall{msg: m, id: m.InvocationID, uploads: cm.Uploads})
	case *protocol.StreamInvocation:
		c.enqueue(ctx, &queuedCall{msg: m, id: m.InvocationID, uploads: cm.Uploads})
	case *protocol.CancelInvocation:
		if cancel, ok := c.calls[m.InvocationID]; ok {
			cancel()
		}
	case *protocol.Close:
		// The client closes its socket next; ClientClosed follows.
	}
}

func (c *connection) enqueue(ctx actor.Context, q *queuedCall) {
	c.waiting = append(c.waiting, q)
	c.startWaiting(ctx)
}

// startWaiting starts queued calls while the parallel limit allows.
func (c *connection) startWaiting(ctx actor.Context) {
	for c.connected && !c.closing && len(c.waiting) > 0 && c.running < c.parallel {
		q := c.waiting[0]
		c.waiting[0] = nil
		c.waiting = c.waiting[1:]
		c.start(ctx, q)
	}
	if len(c.waiting) == 0 {
		c.waiting = nil
	}
}

func (c *connection) start(ctx actor.Context, q *queuedCall) {
	callCtx, cancel := context.WithCancel(c.ctx)
	if q.id != "" {
		c.calls[q.id] = cancel
	}
	c.running++
	self, root := ctx.Self(), ctx.ActorSystem().Root
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { root.Send(self, &callReleased{}) }) }
	call := &fabric.Call{
		Message: q.msg,
		Uploads: q.uploads,
		Reply:   func(m protocol.Message) { root.Send(self, &callReply{msg: m}) },
		Release: release,
	}
	call.Done = func() {
		release()
		cancel()
		root.Send(self, &callDone{id: q.id, uploads: q.uploads})
	}
	c.wg.Add(1)
	c.rt.Go(func() {
		defer c.wg.Done()
		c.invoker.Invoke(callCtx, c.info, call)
	})
}

func (c *connection) onCallDone(m *callDone) {
	if m.id != "" {
		if cancel, ok := c.calls[m.id]; ok {
			cancel()
			delete(c.calls, m.id)
		}
	}
	for _, u := range m.uploads {
		c.uploads.Remove(u)
	}
}

func (c *connection) onClosed(ctx actor.Context, err error) {
	if c.closing {
		return
	}
	c.closing = true
	c.waiting = nil
	c.uploads.CloseAll(errors.New("connection closed"))
	c.cancel()
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.wg.Add(1)
	c.rt.Go(func() {
		defer c.wg.Done()
		// OnDisconnected gets its own context: the connection's is over,
		// but the hook may still send to others.
		c.invoker.Disconnected(context.Background(), c.info, err)
		root.Send(self, &disconnectDone{})
	})
}
