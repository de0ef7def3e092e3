package hub

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/actors"
)

// Errors of client results (InvokeClient); compare with errors.Is.
var (
	// ErrClientDisconnected: the invoked connection ended (or was already
	// ending) before it answered.
	ErrClientDisconnected = actors.ErrClientDisconnected
	// ErrNoClientResult: the client had no handler for the method, or its
	// handlers returned nothing (the official clients answer "Client didn't
	// provide a result.").
	ErrNoClientResult = errors.New("the client did not provide a result")
)

// ClientResultError is the error a client answered an invocation with
// (InvokeClient): its handler threw, and Message is the client's text.
type ClientResultError struct{ Message string }

// Error returns the client's message.
func (e *ClientResultError) Error() string { return e.Message }

// Is reports ErrNoClientResult for the official clients' answer when they
// had no handler, or no handler returned a value.
func (e *ClientResultError) Is(target error) bool {
	return target == ErrNoClientResult && e.Message == noResultMessage
}

// noResultMessage is the official clients' Completion error when no
// handler returned a value (JS HubConnection._invokeClientMethod).
const noResultMessage = "Client didn't provide a result."

// resultBackstop bounds the wait for a client result when ctx has no
// deadline. Every wait is answered by the actors (result, cancel,
// disconnect, shutdown), so it only matters if an answer is lost.
const resultBackstop = 24 * time.Hour

// ClientInvoker is what can invoke a method on one connection and await
// its result: Clients, CallerClients, and a HubContext's Clients.
type ClientInvoker interface {
	InvokeClient(ctx context.Context, connectionID, target string, result any, args ...any) error
}

// Invoke invokes target(args...) on connection connectionID, wherever it
// is connected, and returns the client's result bound into T, as
// arguments of hub methods are bound (JSON or MessagePack, whatever the
// client speaks). See Clients.InvokeClient for the errors.
func Invoke[T any](ctx context.Context, c ClientInvoker, connectionID, target string, args ...any) (T, error) {
	var v T
	err := c.InvokeClient(ctx, connectionID, target, &v, args...)
	return v, err
}

// InvokeClient invokes target(args...) on connection connectionID,
// wherever it is connected, waits for the client's answer (SignalR client
// results: a client handler that returns a value) and binds its value
// into result (a pointer; nil to discard it). One invocation, one pending
// entry: it is gone when the call returns, whatever the outcome.
//
// The wait ends with ctx: give ctx a deadline (a client that never answers
// is only ended by it or by disconnecting). Errors, each an *Error whose
// text a hub method may return to its caller:
//   - the client's handler threw: wraps a *ClientResultError with its text;
//     the client had no handler returning a value: also wraps
//     ErrNoClientResult;
//   - the connection ended before answering: wraps ErrClientDisconnected;
//   - no node has the connection: wraps actors.ErrUnknownConnection (on a
//     backplane with other nodes, after Config.GroupAckTimeout);
//   - the backplane is down: wraps actors.ErrNotDeliveredRemotely;
//   - ctx ended: wraps ctx.Err() (context.DeadlineExceeded on timeout);
//     the connection's node forgets the invocation;
//   - the result does not fit result's type.
//
// Safe for concurrent use. A hub method may invoke its own caller (its
// Completion is not an invocation, so it is not held behind the call).
func (c targets) InvokeClient(ctx context.Context, connectionID, target string, result any, args ...any) error {
	if c.rt == nil {
		return ErrNotStarted
	}
	what := fmt.Sprintf("client result of %q from connection %q", shorten(target), shorten(connectionID))
	invID, err := newInvocationID()
	if err != nil {
		return fmt.Errorf("hub: %s: %w", what, err)
	}
	req, err := actors.NewClientInvokeRequest(connectionID, invID, target, args...)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	n, pid := c.rt.node, c.rt.pid
	backstop := resultBackstop
	if dl, ok := ctx.Deadline(); ok {
		// ctx ends first, so its error is reported, not the future's.
		backstop = time.Until(dl) + answerMargin
	}
	if err := ctx.Err(); err != nil {
		return &Error{Message: what + ": " + err.Error(), Err: err}
	}
	f := n.cfg.seams.Runtime.Request(n.root, pid, req, backstop)
	// When ctx ends, the holder of the invocation answers with
	// context.Canceled and forgets it (on whichever node).
	stop := context.AfterFunc(ctx, func() {
		n.root.Send(pid, &actors.ClientInvokeCancel{ConnectionID: connectionID, InvocationID: invID})
	})
	res, ferr := f.Result()
	stop()
	if err := ctx.Err(); err != nil {
		return &Error{Message: what + ": " + err.Error(), Err: err}
	}
	if ferr != nil {
		return fmt.Errorf("hub: %s: no answer from the node's actors: %w", what, ferr)
	}
	var resp *actors.ClientInvokeResponse
	switch r := res.(type) {
	case *actors.ClientInvokeResponse:
		resp = r
	case *actor.DeadLetterResponse:
		resp = &actors.ClientInvokeResponse{Err: actors.ErrClientDisconnected}
	default:
		return fmt.Errorf("hub: %s: unexpected answer %T", what, res)
	}
	var ce *actors.ClientError
	switch {
	case errors.As(resp.Err, &ce):
		return &Error{Message: what + ": the client answered with an error: " + ce.Message, Err: &ClientResultError{Message: ce.Message}}
	case errors.Is(resp.Err, context.Canceled):
		return &Error{Message: what + ": cancelled", Err: context.Canceled}
	case errors.Is(resp.Err, actors.ErrClientDisconnected):
		return &Error{Message: what + ": " + resp.Err.Error(), Err: resp.Err} // with why, when the node said (it moved)
	case resp.Err != nil:
		return clientError(what, resp.Err)
	}
	if result == nil || !resp.HasResult || resp.Protocol == nil {
		return nil
	}
	if err := resp.Protocol.Unmarshal(resp.Result, result); err != nil {
		return &Error{Message: fmt.Sprintf("%s: the client's result does not fit %T: %v", what, result, err), Err: err}
	}
	return nil
}

// newInvocationID returns a random invocation id (16 bytes, base64url):
// unique on a connection even when several nodes invoke it at once.
func newInvocationID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
