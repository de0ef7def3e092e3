package hub

import (
	"context"
	"sync"

	"github.com/hubfabric/hubfabric/internal/fabric"
)

// Context is what a hub method gets about its call and connection. It is a
// context.Context that ends when the call is cancelled (a client cancelling
// a stream) or the connection closes, so pass it to blocking calls such as
// Clients().All().Send. A Context is valid only during the call it was
// given to (for OnDisconnected: during the hook).
type Context struct {
	context.Context

	// ConnectionID is the caller's connection id.
	ConnectionID string
	// UserID is the caller's user id from the Authenticator ("" if anonymous).
	UserID string
	// Claims are the Authenticator's claims (nil if none).
	Claims map[string]any
	// Items holds values for the connection's lifetime; see
	// fabric.ConnectionInfo.Items for when it is safe to use.
	Items map[string]any
	// Clients addresses clients relative to the caller.
	Clients CallerClients
	// Groups changes group membership.
	Groups Groups

	info *fabric.ConnectionInfo
	rt   *hubRuntime
	// producers are the goroutines Produce started; the call waits for them.
	producers sync.WaitGroup
	produceMu sync.Mutex
	produced  error // the first error a producer ended with
}

func newContext(ctx context.Context, rt *hubRuntime, info *fabric.ConnectionInfo) *Context {
	return &Context{
		Context:      ctx,
		ConnectionID: info.ID,
		UserID:       info.UserID,
		Claims:       info.Claims,
		Items:        info.Items,
		Clients:      CallerClients{targets: targets{rt: rt}, callerID: info.ID},
		Groups:       Groups{rt: rt},
		info:         info,
		rt:           rt,
	}
}

// Abort closes the caller's connection with a Close message that does not
// allow automatic reconnect. It returns at once.
func (c *Context) Abort() { c.info.Abort("Connection aborted by the server.") }

// Produce returns a server stream fed by produce, which runs on a goroutine
// that the invocation owns: a hub method returns Produce's channel instead
// of starting a goroutine of its own. produce calls send for each item;
// send returns false once the client cancelled the stream or the
// connection ended, and produce must then return. When produce returns
// an error the stream ends with an error Completion (its text shown to
// the client for an *Error, as for a method's error); when it panics, the
// panic is logged with its stack and the stream ends with an error
// Completion, while the connection and the node go on. The call is over
// only when produce has returned. Use it in server stream methods only,
// once per call.
func Produce[T any](c *Context, produce func(send func(T) bool) error) <-chan T {
	ch := make(chan T)
	c.producers.Add(1)
	go func() {
		defer c.producers.Done()
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = c.rt.panicked(c.info, "stream producer", r)
			}
			if err != nil {
				c.produceMu.Lock()
				if c.produced == nil {
					c.produced = err
				}
				c.produceMu.Unlock()
			}
			close(ch)
		}()
		err = produce(func(v T) bool {
			select {
			case ch <- v:
				return true
			case <-c.Done():
				return false
			}
		})
	}()
	return ch
}

// produceErr is the error a producer ended with, if any.
func (c *Context) produceErr() error {
	c.produceMu.Lock()
	defer c.produceMu.Unlock()
	return c.produced
}

// CloseFunc returns a function that closes the caller's connection with a
// Close message carrying reason (allowReconnect false), like Abort with a
// text of its own. Unlike the Context, the function stays valid after the
// call: keep it (from OnConnected) to close the connection later, from any
// goroutine; it returns at once, and calling it after the connection ended
// does nothing.
func (c *Context) CloseFunc() func(reason string) {
	abort := c.info.Abort
	return func(reason string) { abort(reason) }
}
