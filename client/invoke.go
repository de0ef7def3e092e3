package client

import (
	"context"
	"reflect"
	"sync"

	"github.com/hubfabric/hubfabric/protocol"
)

// Result is the outcome of a successful Invoke.
type Result struct {
	value protocol.RawValue
	has   bool
	proto protocol.HubProtocol
}

// HasValue reports whether the hub method returned a value (possibly null);
// false means a void method.
func (r *Result) HasValue() bool { return r.has }

// Raw returns the result exactly as the server encoded it (a JSON token or a
// MessagePack object), or nil for a void method.
func (r *Result) Raw() protocol.RawValue { return r.value }

// Bind decodes the result into the value v points to, with the protocol of
// the connection. For a void method it leaves v unchanged and returns nil.
func (r *Result) Bind(v any) error {
	if !r.has {
		return nil
	}
	return r.proto.Unmarshal(r.value, v)
}

// call is a pending Invoke.
type call struct{ ch chan callResult }

type callResult struct {
	m   *protocol.Completion
	err error
}

// Each pending call is removed from its session before it is completed or
// failed, so ch (capacity 1) never blocks.
func (k *call) item(protocol.RawValue)          {}
func (k *call) complete(m *protocol.Completion) { k.ch <- callResult{m: m} }
func (k *call) fail(err error)                  { k.ch <- callResult{err: err} }

// upload is a channel argument to be sent as a client-to-server stream.
type upload struct {
	id string
	ch reflect.Value
}

// extractUploads replaces channel arguments: each receivable channel gets a
// stream id (from the invocation id counter) and is removed from args.
func (c *Conn) extractUploads(args []any) ([]any, []upload) {
	var ups []upload
	out := args[:0:0]
	for _, a := range args {
		if v := reflect.ValueOf(a); v.Kind() == reflect.Chan && v.Type().ChanDir()&reflect.RecvDir != 0 {
			ups = append(ups, upload{id: c.newID(), ch: v})
			continue
		}
		out = append(out, a)
	}
	return out, ups
}

func streamIDs(ups []upload) []string {
	if len(ups) == 0 {
		return nil
	}
	ids := make([]string, len(ups))
	for i, u := range ups {
		ids[i] = u.id
	}
	return ids
}

// startUploads starts one goroutine per upload stream, owned by the Conn.
func (c *Conn) startUploads(s *session, ups []upload) {
	for _, u := range ups {
		c.goTracked(func() { s.upload(u.id, u.ch) })
	}
}

// Invoke calls the hub method target with args and waits for its
// Completion. A server-reported failure is a *HubError. While reconnecting
// it fails with ErrNotConnected, after the end with ErrClosed, and if the
// connection ends before the Completion with an error wrapping
// ErrConnectionLost (or ErrClosed after Close). If ctx ends first it returns
// ctx.Err() and a late Completion is ignored.
//
// An argument that is a receivable channel (chan T or <-chan T) becomes an
// upload stream: it is removed from the arguments and named in streamIds,
// and each value received from it is sent as a stream item until it is
// closed, which sends the stream's Completion. The Conn stops receiving from
// the channel when the connection ends, so producers should also watch
// their own ctx or Conn.Done.
func (c *Conn) Invoke(ctx context.Context, target string, args ...any) (*Result, error) {
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	args, ups := c.extractUploads(args)
	id := c.newID()
	k := &call{ch: make(chan callResult, 1)}
	if err := s.register(id, k); err != nil {
		return nil, err
	}
	inv := &protocol.Invocation{InvocationID: id, Target: target, Arguments: args, StreamIDs: streamIDs(ups)}
	if err := s.send(ctx, inv); err != nil {
		s.remove(id)
		return nil, err
	}
	c.startUploads(s, ups)
	select {
	case r := <-k.ch:
		if r.err != nil {
			return nil, r.err
		}
		if r.m.Error != "" {
			return nil, &HubError{Message: r.m.Error}
		}
		res := &Result{has: r.m.HasResult, proto: c.proto}
		if res.has {
			res.value, _ = r.m.Result.(protocol.RawValue)
		}
		return res, nil
	case <-ctx.Done():
		s.remove(id)
		return nil, ctx.Err()
	}
}

// InvokeAs calls Invoke and binds the result to a T. A void method gives
// T's zero value.
func InvokeAs[T any](ctx context.Context, c *Conn, target string, args ...any) (T, error) {
	var v T
	r, err := c.Invoke(ctx, target, args...)
	if err != nil {
		return v, err
	}
	err = r.Bind(&v)
	return v, err
}

// Send invokes the hub method target without waiting: the invocation has no
// id and the server sends no Completion. It returns once the message is
// written. Channel arguments are upload streams, as with Invoke.
func (c *Conn) Send(ctx context.Context, target string, args ...any) error {
	s, err := c.current()
	if err != nil {
		return err
	}
	args, ups := c.extractUploads(args)
	inv := &protocol.Invocation{Target: target, Arguments: args, StreamIDs: streamIDs(ups)}
	if err := s.send(ctx, inv); err != nil {
		return err
	}
	c.startUploads(s, ups)
	return nil
}

// Stream is a server-to-client stream started by Conn.Stream. Read it with
// Next (and Bind) until Next reports false, then check Err. Next and Bind
// must be called from one goroutine at a time; Close and Err may be called
// from any goroutine.
type Stream struct {
	c  *Conn
	s  *session
	id string

	wake chan struct{} // capacity 1: items or the end arrived

	mu     sync.Mutex
	items  []protocol.RawValue // received, not yet returned by Next
	ended  bool
	err    error
	cur    protocol.RawValue
	stopFn func() bool // unregisters the ctx watcher
}

// Stream calls the streaming hub method target with args (a
// StreamInvocation) and returns the stream of its items. Channel arguments
// are upload streams, as with Invoke. ctx governs the whole stream: when it
// ends, the stream is cancelled (a CancelInvocation is sent) and Err
// reports ctx.Err(). Items are buffered without limit until Next takes
// them, so the reader never stalls the connection.
func (c *Conn) Stream(ctx context.Context, target string, args ...any) (*Stream, error) {
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	args, ups := c.extractUploads(args)
	st := &Stream{c: c, s: s, id: c.newID(), wake: make(chan struct{}, 1)}
	if err := s.register(st.id, st); err != nil {
		return nil, err
	}
	inv := &protocol.StreamInvocation{InvocationID: st.id, Target: target, Arguments: args, StreamIDs: streamIDs(ups)}
	if err := s.send(ctx, inv); err != nil {
		s.remove(st.id)
		return nil, err
	}
	c.startUploads(s, ups)
	stop := context.AfterFunc(ctx, func() {
		if !c.enter() {
			return
		}
		defer c.wg.Done()
		st.cancel(ctx.Err())
	})
	st.mu.Lock()
	if st.ended {
		stop()
	} else {
		st.stopFn = stop
	}
	st.mu.Unlock()
	return st, nil
}

// Next waits for the next item and returns it; it returns false when the
// stream has ended (see Err). If ctx ends while waiting, the stream is
// cancelled as by Close and Err reports ctx.Err(). Items received before
// the server's Completion are all returned before Next reports false.
func (st *Stream) Next(ctx context.Context) (protocol.RawValue, bool) {
	for {
		st.mu.Lock()
		if len(st.items) > 0 {
			v := st.items[0]
			st.items[0] = nil
			st.items = st.items[1:]
			st.cur = v
			st.mu.Unlock()
			return v, true
		}
		ended := st.ended
		st.cur = nil
		st.mu.Unlock()
		if ended {
			return nil, false
		}
		select {
		case <-st.wake:
		case <-ctx.Done():
			st.cancel(ctx.Err())
			return nil, false
		}
	}
}

// Bind decodes the item last returned by Next into the value v points to.
func (st *Stream) Bind(v any) error {
	st.mu.Lock()
	cur := st.cur
	st.mu.Unlock()
	return st.c.proto.Unmarshal(cur, v)
}

// Err returns nil while the stream runs and after it completed normally or
// was closed with Close; otherwise why it ended: a *HubError from the
// server, ctx.Err() if cancelled through a ctx, or an error wrapping
// ErrConnectionLost.
func (st *Stream) Err() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err
}

// Close cancels the stream if it is still running: it sends a
// CancelInvocation, drops buffered items and makes Next report false. It
// is idempotent and always returns nil.
func (st *Stream) Close() error {
	st.cancel(nil)
	return nil
}

// cancel ends the stream on the client's initiative.
func (st *Stream) cancel(cause error) {
	st.mu.Lock()
	if st.ended {
		st.mu.Unlock()
		return
	}
	st.ended, st.err, st.items = true, cause, nil
	stop := st.stopFn
	st.mu.Unlock()
	st.notify()
	if stop != nil {
		stop()
	}
	if st.s.remove(st.id) == nil {
		return // the Completion or the session's end came first
	}
	if err := st.s.send(st.s.ctx, &protocol.CancelInvocation{InvocationID: st.id}); err != nil {
		st.c.log.Debug("client: sending CancelInvocation", "stream_id", st.id, "err", err)
	}
}

func (st *Stream) notify() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// item implements sink.
func (st *Stream) item(v protocol.RawValue) {
	st.mu.Lock()
	if st.ended {
		st.mu.Unlock()
		return
	}
	st.items = append(st.items, v)
	st.mu.Unlock()
	st.notify()
}

// complete implements sink.
func (st *Stream) complete(m *protocol.Completion) {
	var err error
	if m.Error != "" {
		err = &HubError{Message: m.Error}
	}
	st.end(err)
}

// fail implements sink.
func (st *Stream) fail(err error) { st.end(err) }

// end marks the stream over from the server's side, keeping buffered items.
func (st *Stream) end(err error) {
	st.mu.Lock()
	if st.ended {
		st.mu.Unlock()
		return
	}
	st.ended, st.err = true, err
	stop := st.stopFn
	st.mu.Unlock()
	st.notify()
	if stop != nil {
		stop()
	}
}
