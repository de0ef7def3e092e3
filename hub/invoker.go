package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/protocol"
)

// Lifecycle hooks a hub value may implement.
type (
	// Connector is implemented by hubs that want to run code when a client
	// connects; an error refuses the connection with a Close message.
	Connector interface {
		OnConnected(c *Context) error
	}
	// Disconnector is implemented by hubs that want to run code when a
	// client disconnects; err is why (nil for a normal close).
	Disconnector interface {
		OnDisconnected(c *Context, err error)
	}
)

// Connected implements actors.Invoker.
func (rt *hubRuntime) Connected(ctx context.Context, info *fabric.ConnectionInfo) (err error) {
	defer func() {
		switch {
		case !rt.debugOn(ctx):
		case err != nil:
			rt.connLog(info).Debug("connection refused by OnConnected", "err", err)
		default:
			rt.connLog(info).Debug("connected", "protocol", info.Outlet.Protocol().Name())
		}
	}()
	h, ok := rt.impl.(Connector)
	if !ok {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = rt.panicked(info, "OnConnected", r)
			return
		}
		if err != nil {
			// The connection actor reads the error's text: take it here,
			// where a panicking Error method is caught.
			err = errors.New(safeText(err))
		}
	}()
	return h.OnConnected(newContext(ctx, rt, info))
}

// safeText is err.Error() for an error hub code made, "" when nil, and a
// placeholder when that panics.
func safeText(err error) (text string) {
	defer func() {
		if r := recover(); r != nil {
			text = fmt.Sprintf("(the error's text panicked: %v)", r)
		}
	}()
	return err.Error()
}

// Disconnected implements actors.Invoker.
func (rt *hubRuntime) Disconnected(ctx context.Context, info *fabric.ConnectionInfo, cause error) {
	switch {
	case !rt.debugOn(ctx):
	case cause != nil:
		rt.connLog(info).Debug("disconnected", "reason", cause)
	default:
		rt.connLog(info).Debug("disconnected", "reason", "closed normally")
	}
	h, ok := rt.impl.(Disconnector)
	if !ok {
		return
	}
	var err error
	defer rt.recoverInto(&err, info, "OnDisconnected")
	h.OnDisconnected(newContext(ctx, rt, info), cause)
}

// debugOn reports whether the node logs at Debug: a connection's logger
// (connLog) and the record's arguments are built only then.
func (rt *hubRuntime) debugOn(ctx context.Context) bool {
	return rt.node.log.Enabled(ctx, slog.LevelDebug)
}

// connLog is the node's logger with the connection's identity.
func (rt *hubRuntime) connLog(info *fabric.ConnectionInfo) *slog.Logger {
	return rt.node.log.With("hub", rt.name, "conn_id", info.ID, "user_id", info.UserID)
}

// recoverInto turns a panic of hub code into *err, logging it with its
// stack. Deferred directly by every function that runs hub code.
func (rt *hubRuntime) recoverInto(err *error, info *fabric.ConnectionInfo, what string) {
	if r := recover(); r != nil {
		*err = rt.panicked(info, what, r)
	}
}

// panicked logs a recovered panic of hub code with its stack and returns
// it as an error; for deferred functions that must call recover
// themselves.
func (rt *hubRuntime) panicked(info *fabric.ConnectionInfo, what string, r any) error {
	rt.connLog(info).Error("hub code panicked", "method", what, "panic", r, "stack", string(debug.Stack()))
	return fmt.Errorf("panic: %v", r)
}

// Invoke implements actors.Invoker: it binds the arguments, calls the
// method and replies with a Completion (or, for a stream, StreamItems and a
// Completion). Whatever the hub code does (fails, panics, returns a value
// that cannot be encoded, reads an upload that fails), the client gets a
// Completion, and the connection goes on.
func (rt *hubRuntime) Invoke(ctx context.Context, info *fabric.ConnectionInfo, call *fabric.Call) {
	defer call.Done()
	var (
		id, target string
		args       []any
		streaming  bool
	)
	switch m := call.Message.(type) {
	case *protocol.Invocation:
		id, target, args = m.InvocationID, m.Target, m.Arguments
	case *protocol.StreamInvocation:
		id, target, args, streaming = m.InvocationID, m.Target, m.Arguments, true
	default:
		return
	}
	// With metrics, the call is counted under its method once it is known
	// (until then, and for names the hub lacks, under UnknownMethod).
	proto := info.Outlet.Protocol()
	t := tally{mm: rt.unknown, call: call, proto: proto}
	if t.mm != nil {
		t.start = time.Now()
	}
	failed := false
	fail := func(msg string) {
		failed = true
		rt.connLog(info).Debug("hub call failed", "method", target, "invocation_id", id, "err", msg)
		if id != "" {
			_ = t.complete(&protocol.Completion{InvocationID: id, Error: msg})
		}
	}
	// failure is answered last, and a panic becomes one: binding (a
	// parameter type's UnmarshalJSON) and encoding a result (a MarshalJSON)
	// run hub code too.
	var failure error
	defer func() {
		if r := recover(); r != nil {
			failure = rt.panicked(info, target, r)
		}
		if failure != nil {
			fail(rt.errorText(target, failure))
		}
		t.count(failed) // a call without a Completion
	}()
	m := rt.methods[strings.ToLower(target)]
	if m != nil && m.metrics != nil {
		t.mm = m.metrics
	}
	if m == nil {
		// A Dispatcher takes names the hub has no method for (dispatch.go).
		hcOf := func() *Context { return newContext(ctx, rt, info) }
		if res, ok, err := rt.dispatch(info, call, hcOf, id, target, args, streaming); ok {
			if failure = err; failure == nil && id != "" {
				if err := t.complete(&protocol.Completion{InvocationID: id, HasResult: true, Result: res}); err != nil {
					failure = fmt.Errorf("the result could not be encoded: %w", err)
				}
			}
			return
		}
		fail(fmt.Sprintf("Failed to invoke '%s' due to an error on the server. HubException: Method does not exist.", target))
		return
	}
	if streaming && !m.stream {
		fail(fmt.Sprintf("The client attempted to invoke the non-streaming '%s' method with a streaming invocation.", m.name))
		return
	}
	if !streaming && m.stream {
		fail(fmt.Sprintf("The client attempted to invoke the streaming '%s' method with a non-streaming invocation.", m.name))
		return
	}
	if len(call.Uploads) != m.uploads {
		fail(fmt.Sprintf("Failed to invoke '%s' due to an error on the server. InvalidDataException: Client sent %d stream(s), Hub method expects %d.", m.name, len(call.Uploads), m.uploads))
		return
	}
	in, err := m.bind(proto, args)
	if err != nil {
		fail(fmt.Sprintf("Failed to invoke '%s' due to an error on the server. InvalidDataException: %v", m.name, err))
		return
	}
	cancel := call.Cancel // ends ctx, which is the call's own
	hc := newContext(ctx, rt, info)
	var pumps sync.WaitGroup
	// A method may return before it read its upload streams to the end:
	// the call's context ends first, so the pumps (and producers started
	// with Produce) stop waiting for it.
	defer func() {
		cancel(nil)
		pumps.Wait()
		hc.producers.Wait()
	}()
	ui := 0
	for i, p := range m.params {
		if p.Kind() == reflect.Chan && i < len(in) {
			in[i] = rt.pumpUpload(ctx, cancel, &pumps, info, proto, call.Uploads[ui], p)
			ui++
		}
	}
	if m.uploads > 0 {
		// A method reading upload streams may run long; it does not hold up
		// the client's other invocations.
		call.Release()
	}
	out, failure := rt.call(m, hc, info, in)
	if failure == nil {
		// An upload that failed (the client's error, an item of the wrong
		// type) fails the call, as an exception from the stream's reader
		// does in ASP.NET. A pump sets the cause before it closes the
		// channel, so a method that read to the end cannot miss it.
		failure = uploadFailure(ctx)
	}
	if failure != nil {
		return // the deferred fail answers
	}
	if m.stream {
		// A stream goes on after its method returned; the client's next
		// call need not wait for it.
		call.Release()
		failure = rt.pumpStream(ctx, hc, &t, id, out)
		return
	}
	if id == "" {
		return
	}
	c := &protocol.Completion{InvocationID: id}
	if m.result != nil {
		c.HasResult = true
		c.Result = out.Interface()
	}
	if err := t.complete(c); err != nil {
		failure = fmt.Errorf("the result could not be encoded: %w", err)
	}
}

// tally counts one call's outcome, once, and before the client can see
// it: a client holding its Completion finds the call counted. A nil mm
// (metrics off) counts nothing.
type tally struct {
	mm      *methodMetrics
	start   time.Time
	counted bool
	call    *fabric.Call
	proto   protocol.HubProtocol
}

func (t *tally) count(failed bool) {
	if t.mm != nil && !t.counted {
		t.counted = true
		t.mm.observe(t.start, failed)
	}
}

// complete encodes c, counts the call (failed when c carries an error),
// then sends c. A c that cannot be encoded is neither counted nor sent:
// its error is returned, and the error Completion that follows counts it.
func (t *tally) complete(c *protocol.Completion) error {
	rec, err := t.proto.AppendMessage(nil, c)
	if err != nil {
		return err
	}
	t.count(c.Error != "")
	t.call.Answer(rec)
	return nil
}

// call runs the method, turning a panic into an error.
func (rt *hubRuntime) call(m *method, hc *Context, info *fabric.ConnectionInfo, in []reflect.Value) (result reflect.Value, err error) {
	defer rt.recoverInto(&err, info, m.name)
	args := make([]reflect.Value, 0, len(in)+1)
	args = append(args, reflect.ValueOf(hc))
	args = append(args, in...)
	outs := m.fn.Call(args)
	if m.hasErr {
		if e := outs[len(outs)-1]; !e.IsNil() {
			return reflect.Value{}, e.Interface().(error)
		}
	}
	if m.result != nil {
		return outs[0], nil
	}
	return reflect.Value{}, nil
}

// errorText is the Completion error for err, which hub code made: its
// Error, Unwrap or As methods may panic too (a typed nil, say), so the
// text is made under recover.
func (rt *hubRuntime) errorText(method string, err error) (text string) {
	defer func() {
		if r := recover(); r != nil {
			rt.node.log.Error("hub error value panicked", "hub", rt.name, "method", method, "panic", r, "stack", string(debug.Stack()))
			text = fmt.Sprintf("An unexpected error occurred invoking '%s' on the server.", method)
		}
	}()
	return rt.unsafeErrorText(method, err)
}

func (rt *hubRuntime) unsafeErrorText(method string, err error) string {
	var he *Error
	if errors.As(err, &he) {
		return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server. HubException: %s", method, he.Message)
	}
	if rt.node.cfg.DetailedErrors {
		return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server. %v", method, err)
	}
	return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server.", method)
}

// uploadError is the cause a failed upload stream cancels its call's
// Context with; err is the *Error the call then fails with.
type uploadError struct{ err *Error }

func (e *uploadError) Error() string { return e.err.Error() }
func (e *uploadError) Unwrap() error { return e.err }

// uploadFailure is the error of the upload stream that failed the call
// whose Context is ctx, or nil.
func uploadFailure(ctx context.Context) error {
	var ue *uploadError
	if errors.As(context.Cause(ctx), &ue) {
		return ue.err
	}
	return nil
}

// pumpUpload returns a channel of the parameter's type fed from an upload
// stream by a goroutine that pumps joins before the call ends. The channel
// closes when the stream ends. When the stream failed (the client ended it
// with an error, or sent an item that does not fit the parameter type),
// the call's Context is cancelled first, with an *Error saying why as its
// cause (context.Cause), and the call fails with that error whatever the
// method returns.
func (rt *hubRuntime) pumpUpload(ctx context.Context, cancel context.CancelCauseFunc, pumps *sync.WaitGroup, info *fabric.ConnectionInfo, proto protocol.HubProtocol, u *fabric.Upload, chType reflect.Type) reflect.Value {
	elem := chType.Elem()
	ch := reflect.MakeChan(reflect.ChanOf(reflect.BothDir, elem), 0)
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		defer ch.Close()
		var err error
		defer func() {
			// decodeArg runs the parameter type's unmarshalling: hub code.
			if r := recover(); r != nil {
				err = rt.panicked(info, "upload stream "+u.ID, r)
			}
			if err != nil {
				cancel(&uploadError{err: &Error{Message: fmt.Sprintf("Stream '%s' failed: %v", u.ID, err)}})
			}
		}()
		done := reflect.ValueOf(ctx.Done())
		for item := 1; ; item++ {
			raw, ok := u.Next(ctx)
			if !ok {
				var se *fabric.StreamError
				if errors.As(u.Err(), &se) {
					cancel(&uploadError{err: &Error{Message: se.Message, Err: se}})
				}
				return
			}
			var v reflect.Value
			v, err = decodeArg(proto, raw, elem)
			if err != nil {
				err = fmt.Errorf("item %d does not fit %s: %w", item, elem, err)
				return
			}
			chosen, _, _ := reflect.Select([]reflect.SelectCase{
				{Dir: reflect.SelectSend, Chan: ch, Send: v},
				{Dir: reflect.SelectRecv, Chan: done},
			})
			if chosen == 1 {
				return
			}
		}
	}()
	return ch.Convert(chType)
}

// pumpStream sends the items of a server stream until it closes or the
// client cancels, then the Completion. It returns why the stream failed
// (an item that cannot be encoded, a Produce function's error or panic),
// leaving the error Completion to the caller; the call's Context is
// cancelled by then, so a producer stops.
func (rt *hubRuntime) pumpStream(ctx context.Context, hc *Context, t *tally, id string, ch reflect.Value) error {
	if ch.IsNil() {
		return &Error{Message: "the stream method returned a nil channel"}
	}
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: ch},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
	}
	for {
		chosen, v, ok := reflect.Select(cases)
		if chosen == 1 {
			if err := uploadFailure(ctx); err != nil {
				return err
			}
			// Cancelled by the client, or the connection ended. The
			// producers stop first: the Completion frees the stream's place
			// in the connection's bound, which must not outlive them.
			hc.producers.Wait()
			_ = t.complete(&protocol.Completion{InvocationID: id})
			return nil
		}
		if !ok {
			hc.producers.Wait()
			if err := hc.produceErr(); err != nil {
				return err
			}
			if err := uploadFailure(ctx); err != nil {
				return err
			}
			_ = t.complete(&protocol.Completion{InvocationID: id})
			return nil
		}
		if err := t.call.Reply(&protocol.StreamItem{InvocationID: id, Item: v.Interface()}); err != nil {
			return fmt.Errorf("a stream item could not be encoded: %w", err)
		}
	}
}
