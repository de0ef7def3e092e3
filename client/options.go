package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/hubfabric/hubfabric/protocol"
)

// Options configures Dial. The zero value is valid: every field documents
// its default. Dial copies the Options, so changing them afterwards has no
// effect.
type Options struct {
	// Protocol is the hub protocol: "json" (the default, text frames) or
	// "messagepack" (binary frames).
	Protocol string

	// AccessToken, when set, is called before every connection attempt
	// (Dial and each reconnect); the token is sent as
	// "Authorization: Bearer <token>" on negotiate and on the WebSocket
	// request. An error aborts the attempt. A negotiate redirect that carries
	// an accessToken replaces it for the rest of that attempt.
	AccessToken func(ctx context.Context) (string, error)

	// Header holds extra HTTP headers sent on negotiate and on the WebSocket
	// request. Nil sends none.
	Header http.Header

	// HTTPClient is used for negotiate and the WebSocket upgrade.
	// Nil means http.DefaultClient.
	HTTPClient *http.Client

	// SkipNegotiation connects the WebSocket directly to the hub URL, without
	// a negotiate request and without an id. The Conn then has no
	// ConnectionID. Default false.
	SkipNegotiation bool

	// Handlers are registered (as with Conn.On) before the handshake, so
	// invocations the server sends right after connecting are not missed.
	// Nil registers none.
	Handlers map[string]any

	// HandshakeTimeout bounds the handshake (sending the request and
	// receiving the response). Default 15s.
	HandshakeTimeout time.Duration

	// KeepAliveInterval: a Ping is sent when nothing was sent for this long.
	// Default 15s. Keep it below the server's client timeout (30s on ASP.NET).
	KeepAliveInterval time.Duration

	// ServerTimeout: the connection ends with ErrServerTimeout (and
	// reconnects if a policy is set) when nothing was received for this
	// long. Default 30s; it should be about twice the server's keep-alive
	// interval (15s on ASP.NET).
	ServerTimeout time.Duration

	// MaxMessageSize bounds one received hub message, in bytes. A larger
	// message ends the connection. One WebSocket frame, which may batch
	// several messages, may hold up to 4 × MaxMessageSize. Default 1 MiB.
	MaxMessageSize int

	// Reconnect is the automatic reconnect policy. Nil (the default) never
	// reconnects: the Conn ends when its connection does. Otherwise a lost
	// connection, a server timeout or a server Close that allows reconnecting
	// starts reconnect attempts, each a new negotiate and connection (and so a
	// new connection id); handlers are kept, invocations and streams in
	// flight fail with ErrConnectionLost. Each attempt is bounded by 100s
	// (the JS client's HTTP timeout) besides HandshakeTimeout. DefaultReconnect
	// mirrors the JS client.
	Reconnect ReconnectPolicy

	// Logger receives connection life-cycle events (Debug) and problems with
	// handlers and messages (Warn). Nil discards them.
	Logger *slog.Logger
}

// Defaults applied by Dial to zero Options fields.
const (
	// DefaultHandshakeTimeout is the default Options.HandshakeTimeout.
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultKeepAliveInterval is the default Options.KeepAliveInterval.
	DefaultKeepAliveInterval = 15 * time.Second
	// DefaultServerTimeout is the default Options.ServerTimeout.
	DefaultServerTimeout = 30 * time.Second
	// DefaultMaxMessageSize is the default Options.MaxMessageSize (1 MiB).
	DefaultMaxMessageSize = 1 << 20
)

// ReconnectPolicy decides whether and when to try reconnecting. attempt
// counts the attempts already made since the connection was lost (0 before
// the first), and lastErr is why the connection ended (attempt 0) or why the
// last attempt failed. It returns the delay before the next attempt, or
// ok=false to give up, which ends the Conn. It is called on the Conn's own
// goroutine and must not block.
type ReconnectPolicy func(attempt int, lastErr error) (delay time.Duration, ok bool)

// ReconnectDelays returns a policy that makes one attempt per delay, waiting
// delays[i] before attempt i, and then gives up.
func ReconnectDelays(delays ...time.Duration) ReconnectPolicy {
	delays = append([]time.Duration(nil), delays...)
	return func(attempt int, _ error) (time.Duration, bool) {
		if attempt < 0 || attempt >= len(delays) {
			return 0, false
		}
		return delays[attempt], true
	}
}

// DefaultReconnect is the JS client's default policy: attempts after 0, 2,
// 10 and 30 seconds, then give up.
var DefaultReconnect = ReconnectDelays(0, 2*time.Second, 10*time.Second, 30*time.Second)

// Validate reports Options that Dial would reject: an unknown protocol or a
// negative duration or size.
func (o *Options) Validate() error {
	if o.Protocol != "" {
		if _, ok := protocol.Lookup(o.Protocol); !ok {
			return fmt.Errorf("client: unknown hub protocol %q (want \"json\" or \"messagepack\")", o.Protocol)
		}
	}
	if o.HandshakeTimeout < 0 || o.KeepAliveInterval < 0 || o.ServerTimeout < 0 {
		return errors.New("client: negative timeout in Options")
	}
	if o.MaxMessageSize < 0 {
		return errors.New("client: negative MaxMessageSize in Options")
	}
	return nil
}

// withDefaults returns a copy of o with defaults applied, and its protocol.
func (o *Options) withDefaults() (Options, protocol.HubProtocol, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if err := c.Validate(); err != nil {
		return c, nil, err
	}
	if c.Protocol == "" {
		c.Protocol = "json"
	}
	p, _ := protocol.Lookup(c.Protocol)
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if c.ServerTimeout == 0 {
		c.ServerTimeout = DefaultServerTimeout
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Header = c.Header.Clone()
	return c, p, nil
}
