package hub

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/transport"
)

// Config configures a Node. The zero value is a working single node with
// the in-memory backplane; every field documents its default, and every
// default is defined in this file (withDefaults).
type Config struct {
	// NodeID names the node on the backplane; it must differ between nodes
	// sharing a backplane. Default: random.
	NodeID string
	// Backplane connects the node to others. Default: backplane.NewMemory(),
	// which serves one process only. The node closes it on Shutdown. The
	// backplane owns channel naming on its transport, including the prefix
	// that keeps apps sharing one Redis apart (backplane/redis
	// Options.ChannelPrefix).
	Backplane backplane.Backplane
	// ActorSystem runs the node's actors. Default: a new system logging to
	// Logger, shut down with the node, whose process registry has 256 maps
	// instead of protoactor's 32,768 (2.9 MB less, and less per actor). A
	// system given here is not shut down, and its registry is left as it is.
	ActorSystem *actor.ActorSystem
	// Logger receives the node's logs (and protoactor's, for a system the
	// node creates). Default: discard.
	Logger *slog.Logger
	// Authenticator identifies users on negotiate and connect. Default:
	// auth.Anonymous (every request allowed, no user id).
	Authenticator auth.Authenticator
	// AllowedOrigins are host patterns of browser origins allowed to connect
	// cross-origin (e.g. "app.example.com", "*.example.com"; path.Match
	// syntax), for negotiate and the WebSocket upgrade alike; the Origin
	// must be an http or https origin of a host only. Default: none.
	AllowedOrigins []string
	// TokenSecret keys connection tokens; nodes that share it accept each
	// other's tokens, so a client may negotiate with one node and connect
	// to another (any transport). Default: when the backplane can share a
	// secret (backplane.SharedSecrets: Redis, and Memory backplanes of one
	// bus), the nodes on it agree on one at Start, the first node's random
	// key, kept in Redis under the channel prefix (redisbp
	// Backplane.SecretKey); otherwise, or when the backplane cannot be
	// reached at Start, random per node. A given secret always wins.
	TokenSecret []byte
	// TokenTTL is how long a negotiated connection token may be used to
	// connect. Default 5 min.
	TokenTTL time.Duration
	// KeepAliveInterval: a Ping goes to a client that was sent nothing for
	// this long. Default 15 s.
	KeepAliveInterval time.Duration
	// ClientTimeout: a client that sent nothing for this long (counted from
	// its first message) is closed. Default 30 s.
	ClientTimeout time.Duration
	// HandshakeTimeout bounds the wait for a client's handshake. Default 15 s.
	HandshakeTimeout time.Duration
	// MaxMessageSize bounds one received hub message (one record; a
	// WebSocket frame may carry several), in bytes. A client whose message
	// is longer gets a Close message naming the limit, at any size, and is
	// disconnected. Default 32 KiB.
	MaxMessageSize int
	// MaxOutboundBytes bounds what may wait for one slow client before it is
	// closed with a Close message saying so. Default 1 MiB.
	MaxOutboundBytes int
	// MaxParallelInvocations is how many hub methods of one client run at
	// once. Default 1: one at a time, in arrival order.
	MaxParallelInvocations int
	// StreamBufferCapacity is how many items of one client upload stream may
	// wait for the hub method; past it the client's reader waits. Default 10.
	StreamBufferCapacity int
	// MaxPendingInvocations bounds the invocations of one client that wait
	// for a free slot (see MaxParallelInvocations); MaxPendingInvocationBytes
	// bounds their size (arguments and names). Past either the node stops
	// reading that client's socket until a call starts, so a client that
	// invokes faster than its calls run slows down instead of growing the
	// node's memory. Defaults 128 and 1 MiB.
	MaxPendingInvocations     int
	MaxPendingInvocationBytes int
	// MaxStreamsPerConnection bounds the server streams and upload streams
	// one client has open at a time; an invocation that would open more
	// fails with an error saying so. Default 100.
	MaxStreamsPerConnection int
	// MaxGroupsPerConnection bounds the groups one connection is a member
	// of; an add past it fails with an *Error naming the limit (wrapping
	// actors.ErrLimitExceeded). Default 1000.
	MaxGroupsPerConnection int
	// MaxGroupNameBytes bounds a group name, in group changes and sends;
	// longer ones fail the same way. Default 1024 (as Azure SignalR Service).
	MaxGroupNameBytes int
	// GroupAckTimeout bounds the wait for another node to apply a group
	// change for one of its connections; past it the change fails with
	// actors.ErrUnknownConnection. Default 10 s.
	GroupAckTimeout time.Duration
	// BackplaneTimeout bounds each batch of publishes and each subscription
	// change the node asks of its backplane. The backplane may bound them
	// more tightly itself (backplane/redis: Options.PublishTimeout, 2 s, and
	// Options.ConnectTimeout for subscriptions, 5 s). Default 5 s.
	BackplaneTimeout time.Duration
	// DisableLongPolling and DisableServerSentEvents turn those transports
	// off: negotiate no longer offers them and their requests get 404.
	// Default false: negotiate offers WebSockets, then Server-Sent Events
	// (JSON only), then long polling (JSON and MessagePack), and the
	// official clients fall back in that order.
	DisableLongPolling      bool
	DisableServerSentEvents bool
	// PollTimeout is how long a long poll waits for something to send
	// before it is answered empty and the client polls again (the client
	// gives up on a poll after 100 s). Default 90 s, as ASP.NET.
	PollTimeout time.Duration
	// DetailedErrors sends the text of non-hub errors to clients. Default
	// false, as in SignalR: clients see a generic message.
	DetailedErrors bool
	// OnBackplaneEvent is called for every backplane health event (down,
	// restored, gap), after it was logged and counted.
	OnBackplaneEvent func(backplane.Event)
	// Metrics, when set, is where New registers the node's Prometheus
	// metrics (hubfabric_*: connections, messages, invocations, outbound
	// queues, backplane, actor mailboxes; the README lists them). Counting
	// is atomics and label children resolved at Register, and the gauges
	// are read when scraped, so the hot paths take no lock and look up no
	// label. Shutdown unregisters them. One node per Registerer: for
	// several nodes in one process wrap it, e.g. with
	// prometheus.WrapRegistererWith(prometheus.Labels{"node": id}, reg);
	// New fails when the metrics are already registered. Scraping is safe
	// at any time, concurrently with everything else. Default nil: nothing
	// is registered and nothing is counted.
	Metrics prometheus.Registerer
	// StatefulReconnect grants stateful reconnect (SignalR protocol v2, JS
	// withStatefulReconnect(), .NET 8+ clients) to clients that ask for it
	// on negotiate, on WebSockets: a connection whose socket drops stays
	// for StatefulReconnectWindow, and the client's reconnect with the same
	// token gets every message it missed, once and in order. Default false
	// (a stateless connection pays nothing for it).
	StatefulReconnect bool
	// StatefulReconnectBufferSize bounds the bytes of messages sent to one
	// stateful connection and not yet acknowledged by its client; when it
	// is full, sending to that connection waits for the client's Ack, so
	// its outbound queue fills and MaxOutboundBytes closes a client that
	// never acknowledges. Default 100,000 (as ASP.NET's
	// StatefulReconnectBufferSize).
	StatefulReconnectBufferSize int
	// StatefulReconnectWindow is how long a stateful connection whose
	// WebSocket dropped (without the client's Close message) waits for the
	// client to reconnect; past it the connection ends (OnDisconnected
	// runs). Default 15 s (as ASP.NET's DisconnectTimeout).
	StatefulReconnectWindow time.Duration

	// tokenSecretRandom: TokenSecret was not given; withDefaults made a
	// random one, which Start replaces by the backplane's shared one.
	tokenSecretRandom bool

	// seams replace goroutines, timers and actor Props in the testkit;
	// set through fabric.Hooks.SetSeams.
	seams seam.Seams
}

// Defaults, each defined once.
const (
	defaultTokenTTL          = 5 * time.Minute
	defaultParallel          = 1
	defaultStreamBuffer      = 10
	defaultBackplaneTimeout  = 5 * time.Second
	defaultMaxPublishBatch   = 512
	defaultNodeIDRandomBytes = 8
	defaultTokenSecretBytes  = 32
)

// DefaultGroupAckTimeout is Config.GroupAckTimeout's default: how long a
// group change for a connection on another node waits for that node.
const DefaultGroupAckTimeout = 10 * time.Second

// Defaults of the connection limits, exported for programs that offer them
// as settings (cmd/node's flags); each is the default of the Config field
// of the same name.
const (
	// DefaultKeepAliveInterval is Config.KeepAliveInterval's default.
	DefaultKeepAliveInterval = 15 * time.Second
	// DefaultClientTimeout is Config.ClientTimeout's default.
	DefaultClientTimeout = 30 * time.Second
	// DefaultHandshakeTimeout is Config.HandshakeTimeout's default.
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultMaxMessageSize is Config.MaxMessageSize's default, in bytes.
	DefaultMaxMessageSize = 32 << 10
	// DefaultMaxOutboundBytes is Config.MaxOutboundBytes's default, in bytes.
	DefaultMaxOutboundBytes = 1 << 20
	// DefaultMaxPendingInvocations is Config.MaxPendingInvocations's default.
	DefaultMaxPendingInvocations = 128
	// DefaultMaxPendingInvocationBytes is Config.MaxPendingInvocationBytes's
	// default, in bytes.
	DefaultMaxPendingInvocationBytes = 1 << 20
	// DefaultMaxStreamsPerConnection is Config.MaxStreamsPerConnection's default.
	DefaultMaxStreamsPerConnection = 100
	// DefaultMaxGroupsPerConnection is Config.MaxGroupsPerConnection's default.
	DefaultMaxGroupsPerConnection = 1000
	// DefaultMaxGroupNameBytes is Config.MaxGroupNameBytes's default, in bytes.
	DefaultMaxGroupNameBytes = 1024
	// DefaultPollTimeout is Config.PollTimeout's default.
	DefaultPollTimeout = 90 * time.Second
	// DefaultStatefulReconnectBufferSize is Config.StatefulReconnectBufferSize's
	// default, in bytes.
	DefaultStatefulReconnectBufferSize = 100_000
	// DefaultStatefulReconnectWindow is Config.StatefulReconnectWindow's default.
	DefaultStatefulReconnectWindow = 15 * time.Second
)

// Bounds on waits for the node's own actors, which always answer unless
// the process is starved: they only turn a hang into an error.
const (
	// answerMargin is added to the longest bound an actor works under
	// (a backplane call, a group acknowledgement) before the facade stops
	// waiting for its answer, when the caller's ctx has no deadline.
	answerMargin = 5 * time.Second
	// shutdownStepTimeout bounds each step of Shutdown that waits for the
	// actors when Shutdown's ctx has no deadline.
	shutdownStepTimeout = 30 * time.Second
)

// Validate reports the first field that cannot be used: negative sizes and
// durations (zero means the default) and malformed AllowedOrigins
// patterns. New calls it; it is safe for concurrent use.
func (c Config) Validate() error {
	for _, p := range c.AllowedOrigins {
		if err := transport.ValidOriginPattern(p); err != nil {
			return fmt.Errorf("hub: Config.AllowedOrigins: %w", err)
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxMessageSize", int64(c.MaxMessageSize)}, {"MaxOutboundBytes", int64(c.MaxOutboundBytes)},
		{"MaxParallelInvocations", int64(c.MaxParallelInvocations)}, {"StreamBufferCapacity", int64(c.StreamBufferCapacity)},
		{"KeepAliveInterval", int64(c.KeepAliveInterval)}, {"ClientTimeout", int64(c.ClientTimeout)},
		{"HandshakeTimeout", int64(c.HandshakeTimeout)}, {"GroupAckTimeout", int64(c.GroupAckTimeout)},
		{"BackplaneTimeout", int64(c.BackplaneTimeout)}, {"TokenTTL", int64(c.TokenTTL)},
		{"MaxPendingInvocations", int64(c.MaxPendingInvocations)}, {"MaxPendingInvocationBytes", int64(c.MaxPendingInvocationBytes)},
		{"MaxStreamsPerConnection", int64(c.MaxStreamsPerConnection)}, {"MaxGroupsPerConnection", int64(c.MaxGroupsPerConnection)},
		{"MaxGroupNameBytes", int64(c.MaxGroupNameBytes)}, {"PollTimeout", int64(c.PollTimeout)},
		{"StatefulReconnectBufferSize", int64(c.StatefulReconnectBufferSize)}, {"StatefulReconnectWindow", int64(c.StatefulReconnectWindow)},
	} {
		if f.v < 0 {
			return fmt.Errorf("hub: Config.%s must not be negative (got %d); zero means the default", f.name, f.v)
		}
	}
	return nil
}

// withDefaults returns c with every unset field at its default.
func (c Config) withDefaults() Config {
	if c.NodeID == "" {
		b := make([]byte, defaultNodeIDRandomBytes)
		_, _ = rand.Read(b)
		c.NodeID = hex.EncodeToString(b)
	}
	if c.Backplane == nil {
		c.Backplane = backplane.NewMemory()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Authenticator == nil {
		c.Authenticator = auth.Anonymous
	}
	if len(c.TokenSecret) == 0 {
		c.TokenSecret = make([]byte, defaultTokenSecretBytes)
		_, _ = rand.Read(c.TokenSecret)
		c.tokenSecretRandom = true
	}
	setDefault(&c.TokenTTL, defaultTokenTTL)
	setDefault(&c.KeepAliveInterval, DefaultKeepAliveInterval)
	setDefault(&c.ClientTimeout, DefaultClientTimeout)
	setDefault(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&c.MaxMessageSize, DefaultMaxMessageSize)
	setDefault(&c.MaxOutboundBytes, DefaultMaxOutboundBytes)
	setDefault(&c.MaxParallelInvocations, defaultParallel)
	setDefault(&c.StreamBufferCapacity, defaultStreamBuffer)
	setDefault(&c.MaxPendingInvocations, DefaultMaxPendingInvocations)
	setDefault(&c.MaxPendingInvocationBytes, DefaultMaxPendingInvocationBytes)
	setDefault(&c.MaxStreamsPerConnection, DefaultMaxStreamsPerConnection)
	setDefault(&c.MaxGroupsPerConnection, DefaultMaxGroupsPerConnection)
	setDefault(&c.MaxGroupNameBytes, DefaultMaxGroupNameBytes)
	setDefault(&c.GroupAckTimeout, DefaultGroupAckTimeout)
	setDefault(&c.StatefulReconnectBufferSize, DefaultStatefulReconnectBufferSize)
	setDefault(&c.StatefulReconnectWindow, DefaultStatefulReconnectWindow)
	setDefault(&c.BackplaneTimeout, defaultBackplaneTimeout)
	setDefault(&c.PollTimeout, DefaultPollTimeout)
	c.seams = c.seams.OrReal()
	return c
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}
