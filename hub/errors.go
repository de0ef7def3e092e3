package hub

import (
	"errors"
	"fmt"
)

// Error is an error whose message is shown to the client, like SignalR's
// HubException: a hub method returning an *Error fails the invocation with
// "An unexpected error occurred invoking '<method>' on the server.
// HubException: <Message>". Any other error is reported to the client
// without its text (unless Config.DetailedErrors), so internal details do
// not leak.
type Error struct{ Message string }

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(format string, args ...any) error { return &Error{Message: fmt.Sprintf(format, args...)} }

// Sentinel errors of the package; compare with errors.Is.
var (
	// ErrUnknownHub: no hub is registered under that name.
	ErrUnknownHub = errors.New("hub: unknown hub")
	// ErrNodeClosed: the node was shut down.
	ErrNodeClosed = errors.New("hub: node is shut down")
	// ErrNotStarted: the node has not been started.
	ErrNotStarted = errors.New("hub: node not started")
)
