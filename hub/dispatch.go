package hub

import (
	"fmt"

	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/protocol"
)

// Dispatcher is implemented by a hub value that takes invocations of
// method names it has no Go method for (a gateway that forwards them, such
// as cmd/node's service mode, which POSTs them to an upstream). Go methods
// still win: Dispatch is called only when no method of the hub matches the
// name (case-insensitively). It is called for non-streaming invocations
// without upload streams; a streaming invocation, or one with uploads, of
// an unknown name fails as without a Dispatcher ("Method does not exist").
//
// Dispatch runs where a hub method would (in the connection's invocation
// order, concurrently with other connections' calls) and is guarded the
// same way: a panic fails the invocation with an error Completion, an
// *Error's text reaches the client and other errors are reported
// generically (unless Config.DetailedErrors). For a blocking invocation
// (inv.ID != "") the result is sent in a Completion: a protocol.RawValue
// is written verbatim, so it must be encoded in inv.Protocol; any other
// value is encoded by that protocol.
type Dispatcher interface {
	Dispatch(c *Context, inv Invocation) (result any, err error)
}

// Invocation is a client's call of a method the hub has no Go method for,
// as given to a Dispatcher. It is valid during the Dispatch call only.
type Invocation struct {
	// ID is the invocation id; "" for a non-blocking invocation (the
	// client awaits no result).
	ID string
	// Target is the method name as the client sent it.
	Target string
	// Arguments are the arguments exactly as the client encoded them, in
	// Protocol.
	Arguments []protocol.RawValue
	// Protocol is the connection's hub protocol (JSON or MessagePack).
	Protocol protocol.HubProtocol
}

// dispatch runs a Dispatcher for an invocation that no method matched.
// ok is false when the invocation cannot be dispatched (the hub has no
// Dispatcher, or the invocation streams).
func (rt *hubRuntime) dispatch(info *fabric.ConnectionInfo, call *fabric.Call, hc func() *Context, id, target string, args []any, streaming bool) (result any, ok bool, err error) {
	d, is := rt.impl.(Dispatcher)
	if !is || streaming || len(call.Uploads) > 0 {
		return nil, false, nil
	}
	inv := Invocation{ID: id, Target: target, Protocol: info.Outlet.Protocol(), Arguments: make([]protocol.RawValue, 0, len(args))}
	for _, a := range args {
		raw, isRaw := a.(protocol.RawValue)
		if !isRaw {
			return nil, true, fmt.Errorf("argument of type %T is not a raw value", a)
		}
		inv.Arguments = append(inv.Arguments, raw)
	}
	ok = true // also when Dispatch panics: the panic is the call's failure
	defer rt.recoverInto(&err, info, target)
	result, err = d.Dispatch(hc(), inv)
	return result, true, err
}
