package actors

import (
	"context"
	"fmt"
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/protocol"
)

// Upload is a client-to-server stream: the items the client sends under one
// stream id, ended by the client's Completion. The connection actor pushes;
// the hub method reads with Next.
type Upload struct {
	ID string

	mu     sync.Mutex
	items  []protocol.RawValue
	done   bool
	err    error
	max    int
	notify chan struct{}
}

func newUpload(id string, max int) *Upload {
	return &Upload{ID: id, max: max, notify: make(chan struct{}, 1)}
}

// push adds an item; false means the buffer is full.
func (u *Upload) push(v protocol.RawValue) bool {
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return true
	}
	if len(u.items) >= u.max {
		u.mu.Unlock()
		return false
	}
	u.items = append(u.items, v)
	u.mu.Unlock()
	u.wake()
	return true
}

func (u *Upload) finish(err error) {
	u.mu.Lock()
	if !u.done {
		u.done, u.err = true, err
	}
	u.mu.Unlock()
	u.wake()
}

func (u *Upload) wake() {
	select {
	case u.notify <- struct{}{}:
	default:
	}
}

// Next returns the next item; ok is false when the stream ended (see Err)
// or ctx ended. Safe for use by one reader.
func (u *Upload) Next(ctx context.Context) (v protocol.RawValue, ok bool) {
	for {
		u.mu.Lock()
		if len(u.items) > 0 {
			v = u.items[0]
			u.items[0] = nil
			u.items = u.items[1:]
			u.mu.Unlock()
			return v, true
		}
		done := u.done
		u.mu.Unlock()
		if done {
			return nil, false
		}
		select {
		case <-u.notify:
		case <-ctx.Done():
			u.finish(ctx.Err())
			return nil, false
		}
	}
}

// Err is the client's error for the stream, or the context error that
// ended it, once Next returned false.
func (u *Upload) Err() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// ConnectionConfig tunes connection actors.
type ConnectionConfig struct {
	// MaxParallelInvocations is how many hub methods of one client run at a
	// time; 1 (the default) runs them one by one in arrival order.
	MaxParallelInvocations int
	// StreamBufferCapacity is how many items of one upload stream may wait
	// for the hub method; past it the client is closed. Default 10.
	StreamBufferCapacity int
}

// connection is the actor of one client. It runs the client's hub methods
// in arrival order (up to the parallel limit, each on its own goroutine so
// the actor never blocks), feeds upload streams, cancels streams on
// request, and writes deliveries and replies to the outbound queue in the
// order they reach its mailbox.
type connection struct {
	info    *ConnectionInfo
	invoker Invoker
	cfg     ConnectionConfig

	ctx       context.Context
	cancel    context.CancelFunc
	connected bool // OnConnected finished
	closing   bool
	running   int
	waiting   []*queuedCall
	calls     map[string]context.CancelFunc // by invocation id
	uploads   map[string]*Upload
	wg        sync.WaitGroup
}

// queuedCall is an invocation waiting for a free slot. Its upload streams
// exist from the moment it arrived, so items the client sends meanwhile are
// kept.
type queuedCall struct {
	msg     protocol.Message
	id      string
	uploads []*Upload
}

// call lifecycle messages the actor sends to itself.
type (
	connectedDone struct{ err error }
	callReleased  struct{}
	callDone      struct {
		id      string
		uploads []*Upload
	}
	callReply       struct{ msg protocol.Message }
	disconnectDone  struct{}
	abortConnection struct{ msg string }
	closeConnection struct{ reason string }
)

func newConnectionProps(info *ConnectionInfo, inv Invoker, cfg ConnectionConfig, p PropsFactory) *actor.Props {
	return p(func() actor.Actor {
		return &connection{info: info, invoker: inv, cfg: cfg}
	})
}

// Receive dispatches.
func (c *connection) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.onStarted(ctx)
	case *Deliver:
		_ = c.info.Outlet.Enqueue(m.Payload.For(c.info.Outlet.Protocol()))
	case *ClientMessage:
		c.onClientMessage(ctx, m.Message)
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
	case *ClientClosed:
		c.onClosed(ctx, m.Err)
	case *disconnectDone:
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		c.cancel()
	case *actor.Stopped:
		c.wg.Wait()
	}
}

func (c *connection) onStarted(ctx actor.Context) {
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.calls = make(map[string]context.CancelFunc)
	c.uploads = make(map[string]*Upload)
	if c.cfg.MaxParallelInvocations <= 0 {
		c.cfg.MaxParallelInvocations = 1
	}
	if c.cfg.StreamBufferCapacity <= 0 {
		c.cfg.StreamBufferCapacity = 10
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.info.Abort = func(msg string) { root.Send(self, &abortConnection{msg: msg}) }
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := c.invoker.Connected(c.ctx, c.info)
		root.Send(self, &connectedDone{err: err})
	}()
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

func (c *connection) onClientMessage(ctx actor.Context, msg protocol.Message) {
	if c.closing {
		return
	}
	switch m := msg.(type) {
	case *protocol.Invocation:
		c.enqueue(ctx, m, m.InvocationID, m.StreamIDs)
	case *protocol.StreamInvocation:
		c.enqueue(ctx, m, m.InvocationID, m.StreamIDs)
	case *protocol.StreamItem:
		u, ok := c.uploads[m.InvocationID]
		if !ok {
			return // items of an unknown or finished stream are dropped, as ASP.NET does
		}
		raw, _ := m.Item.(protocol.RawValue)
		if !u.push(raw) {
			c.info.Outlet.Close(fmt.Sprintf("Connection closed with an error: upload stream %q has more than %d items waiting.", m.InvocationID, c.cfg.StreamBufferCapacity), false)
		}
	case *protocol.Completion:
		if u, ok := c.uploads[m.InvocationID]; ok {
			var err error
			if m.Error != "" {
				err = fmt.Errorf("client ended the stream with an error: %s", m.Error)
			}
			u.finish(err)
			delete(c.uploads, m.InvocationID)
		}
	case *protocol.CancelInvocation:
		if cancel, ok := c.calls[m.InvocationID]; ok {
			cancel()
		}
	case *protocol.Close:
		// The client closes its socket next; ClientClosed follows.
	}
}

func (c *connection) enqueue(ctx actor.Context, msg protocol.Message, id string, streamIDs []string) {
	q := &queuedCall{msg: msg, id: id, uploads: make([]*Upload, len(streamIDs))}
	for i, sid := range streamIDs {
		u := newUpload(sid, c.cfg.StreamBufferCapacity)
		c.uploads[sid] = u
		q.uploads[i] = u
	}
	c.waiting = append(c.waiting, q)
	c.startWaiting(ctx)
}

// startWaiting starts queued calls while the parallel limit allows.
func (c *connection) startWaiting(ctx actor.Context) {
	for c.connected && !c.closing && len(c.waiting) > 0 && c.running < c.cfg.MaxParallelInvocations {
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
	call := &Call{
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
	go func() {
		defer c.wg.Done()
		c.invoker.Invoke(callCtx, c.info, call)
	}()
}

func (c *connection) onCallDone(m *callDone) {
	if m.id != "" {
		if cancel, ok := c.calls[m.id]; ok {
			cancel()
			delete(c.calls, m.id)
		}
	}
	for _, u := range m.uploads {
		if c.uploads[u.ID] == u {
			delete(c.uploads, u.ID)
		}
	}
}

func (c *connection) onClosed(ctx actor.Context, err error) {
	if c.closing {
		return
	}
	c.closing = true
	c.waiting = nil
	for _, u := range c.uploads {
		u.finish(fmt.Errorf("connection closed"))
	}
	c.cancel()
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// OnDisconnected gets its own context: the connection's is over,
		// but the hook may still send to others.
		c.invoker.Disconnected(context.Background(), c.info, err)
		root.Send(self, &disconnectDone{})
	}()
}
