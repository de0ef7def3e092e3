package hub

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"

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
	h, ok := rt.impl.(Connector)
	if !ok {
		return nil
	}
	defer rt.recoverInto(&err, "OnConnected")
	return h.OnConnected(newContext(ctx, rt, info))
}

// Disconnected implements actors.Invoker.
func (rt *hubRuntime) Disconnected(ctx context.Context, info *fabric.ConnectionInfo, cause error) {
	h, ok := rt.impl.(Disconnector)
	if !ok {
		return
	}
	var err error
	defer rt.recoverInto(&err, "OnDisconnected")
	h.OnDisconnected(newContext(ctx, rt, info), cause)
}

func (rt *hubRuntime) recoverInto(err *error, what string) {
	if r := recover(); r != nil {
		rt.node.log.Error("hub method panicked", "hub", rt.name, "method", what, "panic", r, "stack", string(debug.Stack()))
		*err = fmt.Errorf("panic: %v", r)
	}
}

// Invoke implements actors.Invoker: it binds the arguments, calls the
// method and replies with a Completion (or, for a stream, StreamItems and a
// Completion).
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
	fail := func(msg string) {
		if id != "" {
			call.Reply(&protocol.Completion{InvocationID: id, Error: msg})
		}
	}
	m := rt.methods[strings.ToLower(target)]
	if m == nil {
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
	proto := info.Outlet.Protocol()
	in, err := m.bind(proto, args)
	if err != nil {
		fail(fmt.Sprintf("Failed to invoke '%s' due to an error on the server. InvalidDataException: %v", m.name, err))
		return
	}
	ctx, cancel := context.WithCancelCause(ctx)
	hc := newContext(ctx, rt, info)
	var pumps sync.WaitGroup
	// A method may return before it read its upload streams to the end:
	// the call's context ends first, so the pumps stop waiting for it.
	defer func() {
		cancel(nil)
		pumps.Wait()
	}()
	ui := 0
	for i, p := range m.params {
		if p.Kind() == reflect.Chan && i < len(in) {
			in[i] = rt.pumpUpload(ctx, cancel, &pumps, proto, call.Uploads[ui], p)
			ui++
		}
	}
	if m.uploads > 0 {
		// A method reading upload streams may run long; it does not hold up
		// the client's other invocations.
		call.Release()
	}
	out, err := rt.call(m, hc, in)
	call.Release()
	if err != nil {
		fail(rt.errorText(m.name, err))
		return
	}
	if m.stream {
		rt.pumpStream(ctx, call, id, out)
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
	call.Reply(c)
}

// call runs the method, turning a panic into an error.
func (rt *hubRuntime) call(m *method, hc *Context, in []reflect.Value) (result reflect.Value, err error) {
	defer rt.recoverInto(&err, m.name)
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

func (rt *hubRuntime) errorText(method string, err error) string {
	var he *Error
	if errors.As(err, &he) {
		return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server. HubException: %s", method, he.Message)
	}
	rt.node.log.Debug("hub method failed", "hub", rt.name, "method", method, "err", err)
	if rt.node.cfg.DetailedErrors {
		return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server. %v", method, err)
	}
	return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server.", method)
}

// pumpUpload returns a channel of the parameter's type fed from an upload
// stream by a goroutine that pumps joins before the call ends. The channel
// closes when the stream ends; when the client ended it with an error, the
// call's Context is also cancelled with an *Error carrying the client's
// message as its cause (context.Cause), so the method can tell the two.
func (rt *hubRuntime) pumpUpload(ctx context.Context, cancel context.CancelCauseFunc, pumps *sync.WaitGroup, proto protocol.HubProtocol, u *fabric.Upload, chType reflect.Type) reflect.Value {
	elem := chType.Elem()
	ch := reflect.MakeChan(reflect.ChanOf(reflect.BothDir, elem), 0)
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		defer ch.Close()
		done := reflect.ValueOf(ctx.Done())
		for {
			raw, ok := u.Next(ctx)
			if !ok {
				var se *fabric.StreamError
				if errors.As(u.Err(), &se) {
					cancel(&Error{Message: se.Error(), Err: se})
				}
				return
			}
			v, err := decodeArg(proto, raw, elem)
			if err != nil {
				rt.node.log.Info("dropping an upload stream item that does not fit the parameter", "hub", rt.name, "stream", u.ID, "err", err)
				continue
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
// client cancels, then the Completion.
func (rt *hubRuntime) pumpStream(ctx context.Context, call *fabric.Call, id string, ch reflect.Value) {
	if ch.IsNil() {
		call.Reply(&protocol.Completion{InvocationID: id, Error: "The stream method returned a nil channel."})
		return
	}
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: ch},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
	}
	for {
		chosen, v, ok := reflect.Select(cases)
		if chosen == 1 {
			// Cancelled by the client, or the connection ended.
			call.Reply(&protocol.Completion{InvocationID: id})
			return
		}
		if !ok {
			call.Reply(&protocol.Completion{InvocationID: id})
			return
		}
		call.Reply(&protocol.StreamItem{InvocationID: id, Item: v.Interface()})
	}
}
