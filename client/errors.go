package client

import (
	"errors"
	"strings"
)

// Errors reported by this package; compare with errors.Is.
var (
	// ErrClosed is returned by operations on a Conn that has been closed with
	// Close or has ended on its own (see Conn.Err for why), and by Conn.Err
	// after Close.
	ErrClosed = errors.New("client: connection closed")
	// ErrNotConnected is returned by operations attempted while the Conn is
	// reconnecting.
	ErrNotConnected = errors.New("client: not connected (reconnecting)")
	// ErrConnectionLost fails invocations and streams still waiting when the
	// underlying connection ended; the error also wraps the cause.
	ErrConnectionLost = errors.New("client: invocation canceled because the underlying connection ended")
	// ErrServerTimeout ends a connection on which nothing was received for
	// Options.ServerTimeout.
	ErrServerTimeout = errors.New("client: server timeout elapsed without receiving a message from the server")
)

// HubError is a failure reported by the server in a Completion: a hub method
// that failed or threw, an unknown method, or a stream that ended with an
// error. Message is the server's text, for example
// "An unexpected error occurred invoking 'Send' on the server.".
type HubError struct {
	Message string
}

// Error implements error.
func (e *HubError) Error() string { return "client: server returned an error: " + e.Message }

// CloseError reports that the server ended the connection with a Close
// message. Message is the server's error text (empty for a plain close) and
// AllowReconnect tells whether the server allowed an automatic reconnect.
type CloseError struct {
	Message        string
	AllowReconnect bool
}

// Error implements error. With a message it reads like the JS client:
// "client: Server returned an error on close: <message>".
func (e *CloseError) Error() string {
	var b strings.Builder
	if e.Message != "" {
		b.WriteString("client: Server returned an error on close: ")
		b.WriteString(e.Message)
	} else {
		b.WriteString("client: server closed the connection")
	}
	if e.AllowReconnect {
		b.WriteString(" (reconnect allowed)")
	}
	return b.String()
}
