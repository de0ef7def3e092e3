package client

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/hubfabric/hubfabric/protocol"
)

// errNoResult is the JS client's answer when no handler produced a result.
const errNoResult = "Client didn't provide a result."

// errMultipleResults is the JS client's answer when several handlers did.
const errMultipleResults = "Client provided multiple results."

var (
	errorType    = reflect.TypeFor[error]()
	rawSliceType = reflect.TypeFor[[]protocol.RawValue]()
)

// handler is one registered client method.
type handler struct {
	fn     reflect.Value
	in     []reflect.Type
	raw    bool // func([]protocol.RawValue) ...: gets the arguments unbound
	hasVal bool // returns a value (first result)
	hasErr bool // returns an error (last result)
}

// newHandler checks fn's signature.
func newHandler(fn any) (*handler, error) {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return nil, fmt.Errorf("client: handler must be a non-nil func, got %T", fn)
	}
	t := v.Type()
	if t.IsVariadic() {
		return nil, fmt.Errorf("client: handler %v must not be variadic (take []protocol.RawValue for raw arguments)", t)
	}
	h := &handler{fn: v}
	for i := range t.NumIn() {
		h.in = append(h.in, t.In(i))
	}
	h.raw = len(h.in) == 1 && h.in[0] == rawSliceType
	switch t.NumOut() {
	case 0:
	case 1:
		if t.Out(0) == errorType {
			h.hasErr = true
		} else {
			h.hasVal = true
		}
	case 2:
		if t.Out(1) != errorType {
			return nil, fmt.Errorf("client: handler %v: the second result must be error", t)
		}
		h.hasVal, h.hasErr = true, true
	default:
		return nil, fmt.Errorf("client: handler %v returns too many values (want none, error, T or (T, error))", t)
	}
	return h, nil
}

// call binds args with p, calls the handler and returns its result.
func (h *handler) call(p protocol.HubProtocol, args []any) (result any, hasResult bool, err error) {
	in := make([]reflect.Value, len(h.in))
	if h.raw {
		raws := make([]protocol.RawValue, len(args))
		for i, a := range args {
			raws[i], _ = a.(protocol.RawValue)
		}
		in[0] = reflect.ValueOf(raws)
	} else {
		if len(args) != len(h.in) {
			return nil, false, fmt.Errorf("client: handler takes %d arguments, the server sent %d", len(h.in), len(args))
		}
		for i, t := range h.in {
			raw, _ := args[i].(protocol.RawValue)
			ptr := reflect.New(t)
			if err := p.Unmarshal(raw, ptr.Interface()); err != nil {
				return nil, false, fmt.Errorf("client: binding argument %d to %v: %w", i, t, err)
			}
			in[i] = ptr.Elem()
		}
	}
	out := h.fn.Call(in)
	if h.hasErr {
		if e := out[len(out)-1]; !e.IsNil() {
			return nil, false, e.Interface().(error)
		}
	}
	if h.hasVal {
		return out[0].Interface(), true, nil
	}
	return nil, false, nil
}

// On registers handler for invocations of the client method target, matched
// case-insensitively. Several handlers may share a target; all run, in
// registration order. handler is a func whose parameters are bound, in
// order, from the invocation's arguments with the protocol's Unmarshal (for
// example func(user string, n int)); a func([]protocol.RawValue) receives
// the arguments unbound. It may return nothing, error, T or (T, error).
//
// When the server expects a result (a client result: the invocation carries
// an id), the value returned by the handler is sent back in a Completion; a
// returned error is sent as the Completion's error; no handler, or no value,
// answers "Client didn't provide a result."; values from several handlers
// answer "Client provided multiple results.".
//
// Handlers run one at a time, in arrival order, on a goroutine owned by the
// Conn; they may call Invoke, Send and Stream. On panics if handler is not a
// func of that shape; register handlers needed right after connecting with
// Options.Handlers instead.
func (c *Conn) On(target string, handler any) {
	if err := c.on(target, handler); err != nil {
		panic(err)
	}
}

func (c *Conn) on(target string, fn any) error {
	h, err := newHandler(fn)
	if err != nil {
		return fmt.Errorf("%w (target %q)", err, target)
	}
	key := strings.ToLower(target)
	c.handlersMu.Lock()
	defer c.handlersMu.Unlock()
	c.handlers[key] = append(c.handlers[key], h)
	return nil
}

// Off removes every handler of target (matched case-insensitively).
func (c *Conn) Off(target string) {
	c.handlersMu.Lock()
	defer c.handlersMu.Unlock()
	delete(c.handlers, strings.ToLower(target))
}

// runHandlers runs on the dispatcher: it calls the handlers of m.Target and
// answers with a Completion when m expects a result.
func (c *Conn) runHandlers(s *session, m *protocol.Invocation) {
	c.handlersMu.RLock()
	hs := c.handlers[strings.ToLower(m.Target)]
	c.handlersMu.RUnlock()
	if len(hs) == 0 {
		c.log.Warn("client: no handler for the server's invocation", "target", m.Target)
	}
	var (
		result    any
		nResults  int
		handleErr error
	)
	for _, h := range hs {
		r, ok, err := h.call(c.proto, m.Arguments)
		if err != nil {
			c.log.Warn("client: handler failed", "target", m.Target, "err", err)
			handleErr = err
			continue
		}
		if ok {
			result = r
			nResults++
		}
	}
	if m.InvocationID == "" {
		return
	}
	reply := &protocol.Completion{InvocationID: m.InvocationID}
	switch {
	case handleErr != nil:
		reply.Error = handleErr.Error()
	case nResults > 1:
		reply.Error = errMultipleResults
	case nResults == 1:
		reply.Result, reply.HasResult = result, true
	default:
		reply.Error = errNoResult
	}
	b, err := s.encode(reply)
	if err != nil {
		c.log.Warn("client: encoding the client result", "target", m.Target, "err", err)
		b, err = s.encode(&protocol.Completion{InvocationID: m.InvocationID, Error: err.Error()})
		if err != nil {
			return
		}
	}
	if err := s.writeFrame(s.ctx, b); err != nil {
		c.log.Debug("client: sending the client result", "target", m.Target, "err", err)
	}
}

// dispatchQueue is the unbounded FIFO of work for the dispatcher goroutine.
// It is unbounded so that the read loop never waits for handlers.
type dispatchQueue struct {
	mu    sync.Mutex
	items []func()
	wake  chan struct{} // capacity 1
}

func (q *dispatchQueue) push(f func()) {
	q.mu.Lock()
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *dispatchQueue) pop() (func(), bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, false
	}
	f := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil
	}
	return f, true
}

// dispatch queues f for the dispatcher goroutine.
func (c *Conn) dispatch(f func()) { c.queue.push(f) }

// dispatchLoop runs queued handlers and hooks one at a time. It exits when
// Close is called (dropping what is queued) or, after running what is
// queued, when the Conn has ended on its own.
func (c *Conn) dispatchLoop() {
	defer close(c.dispatchDone)
	for {
		select {
		case <-c.closeReq:
			return
		default:
		}
		if f, ok := c.queue.pop(); ok {
			f()
			continue
		}
		select {
		case <-c.queue.wake:
		case <-c.closeReq:
			return
		case <-c.done:
			for f, ok := c.queue.pop(); ok; f, ok = c.queue.pop() {
				f()
			}
			return
		}
	}
}
