package hub

import (
	"context"

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
	}
}

// Abort closes the caller's connection with a Close message that does not
// allow automatic reconnect. It returns at once.
func (c *Context) Abort() { c.info.Abort("Connection aborted by the server.") }
