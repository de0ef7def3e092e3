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
type Error struct {
	Message string
	// Err is the cause, if any, for errors.Is and errors.As; it is not
	// shown to the client.
	Err error
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

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
