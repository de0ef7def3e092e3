package redisbp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Defaults applied to zero Options fields.
const (
	DefaultPort           = "6379"
	DefaultConnectTimeout = 5 * time.Second
	DefaultPublishTimeout = 2 * time.Second
	DefaultPartitions     = 16
	DefaultProbeInterval  = time.Second
	DefaultProbeTimeout   = 5 * time.Second
)

// Sharding selects classic (PUBLISH/SUBSCRIBE) or sharded
// (SPUBLISH/SSUBSCRIBE) pub/sub. The two namespaces are separate in Redis,
// so every node sharing a channel prefix must end up in the same mode.
type Sharding int

const (
	// ShardedAuto (the zero value) uses sharded pub/sub on Redis Cluster and
	// on any server of version 7 or later, classic pub/sub otherwise. The
	// server is asked at Start, or on first contact if it is down then.
	ShardedAuto Sharding = iota
	// ShardedOn always uses sharded pub/sub (Redis >= 7.0).
	ShardedOn
	// ShardedOff always uses classic pub/sub. On a cluster every PUBLISH is
	// copied to every node, so throughput shrinks as the cluster grows.
	ShardedOff
)

// String names the mode.
func (s Sharding) String() string {
	switch s {
	case ShardedAuto:
		return "auto"
	case ShardedOn:
		return "on"
	case ShardedOff:
		return "off"
	}
	return "Sharding(" + strconv.Itoa(int(s)) + ")"
}

// Options configure a Backplane and, through NewClient, its Redis client.
// The zero value of every field is its documented default. Options are
// copied by New; changing them afterwards has no effect.
type Options struct {
	// Addrs are the "host:port" endpoints. One endpoint is a standalone
	// server (or, with SentinelMaster, a sentinel); two or more are the seed
	// nodes of a Redis Cluster (or sentinels). A single cluster node listed
	// alone is treated as standalone: list at least two seeds for a cluster.
	// Default: ["localhost:6379"].
	Addrs []string
	// Username and Password authenticate to Redis (ACL user, or Password
	// alone for requirepass). With SentinelMaster they authenticate to the
	// master, not to the sentinels. Default: none.
	Username string
	Password string
	// TLS connects with TLS 1.2 or later, verifying the server name of the
	// first endpoint. For other TLS settings, edit UniversalOptions' TLSConfig
	// and build the client yourself. Default: false.
	TLS bool
	// ChannelPrefix is prepended to every Redis channel name this backplane
	// uses, after the hash tag, and stripped before delivery: the Handler
	// only ever sees the names given to Subscribe. Backplanes must use the
	// same ChannelPrefix to hear each other, and apps sharing one Redis
	// isolate themselves with different ones. It is the only prefix: nodes
	// name channels without one. It must be a name of letters, digits, '.',
	// '_' and '-' ended by one ':' ("app:"), so that no prefix is the start
	// of another app's channel names (see ValidChannelPrefix); Validate
	// refuses anything else. Default: "hubfabric:".
	ChannelPrefix string
	// AbortConnect makes Start fail, with an error wrapping
	// backplane.ErrUnavailable, when Redis cannot be reached within
	// ConnectTimeout. When false (the default, as in StackExchange.Redis),
	// Start succeeds anyway, the Handler gets EventDown, and the backplane
	// connects and subscribes by itself once Redis answers.
	AbortConnect bool
	// SentinelMaster, when set, is the name of the master to ask the
	// sentinels in Addrs for (Redis Sentinel). Default: "" (no Sentinel).
	SentinelMaster string
	// ConnectTimeout bounds dialing a connection, Start's reachability check
	// and how long Subscribe waits for Redis to confirm a subscription
	// before it returns backplane.ErrUnavailable. Default: 5 s.
	ConnectTimeout time.Duration
	// DB is the database selected on connect; pub/sub ignores it, but the
	// client uses it. Default: 0.
	DB int

	// PublishTimeout bounds each Publish, on top of the caller's ctx, so a
	// dead Redis fails a publish quickly instead of blocking. Default: 2 s.
	PublishTimeout time.Duration
	// Sharded selects sharded or classic pub/sub. Default: ShardedAuto.
	Sharded Sharding
	// Partitions is the number of hash-tag partitions in sharded mode: a
	// channel named c is the Redis channel "{p<N>}"+ChannelPrefix+c with
	// N = fnv32a(c) % Partitions, and each partition has its own
	// subscription connection (on a cluster, on the partition's slot
	// owner). More partitions spread load over more cluster nodes at the
	// cost of connections. Backplanes must use the same Partitions to hear
	// each other. Default: 16.
	Partitions int
	// ProbeInterval is how often the backplane pings Redis and sends a probe
	// message through each of its subscription connections. It bounds how
	// soon an outage is noticed when nothing is published. While down, the
	// backplane probes every ProbeInterval or 100 ms, whichever is shorter.
	// Default: 1 s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe may take to come back through a
	// subscription connection that is otherwise idle; past it the connection
	// is deemed deaf, replaced, and its channels reported in an EventGap.
	// Default: 5 s.
	ProbeTimeout time.Duration
	// Logger receives the backplane's logs (outages, gaps, reconnections).
	// Default: nil, which discards them.
	Logger *slog.Logger
}

// withDefaults returns a copy of o with defaults in zero fields.
func (o Options) withDefaults() Options {
	if len(o.Addrs) == 0 {
		o.Addrs = []string{net.JoinHostPort("localhost", DefaultPort)}
	} else {
		o.Addrs = append([]string(nil), o.Addrs...)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.ChannelPrefix == "" {
		o.ChannelPrefix = "hubfabric:"
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.Partitions <= 0 {
		o.Partitions = DefaultPartitions
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports the first field that cannot be used.
func (o Options) Validate() error {
	for _, a := range o.Addrs {
		if err := checkEndpoint(a); err != nil {
			return fmt.Errorf("redisbp: address %q: %w", a, err)
		}
	}
	if o.ChannelPrefix != "" {
		if err := ValidChannelPrefix(o.ChannelPrefix); err != nil {
			return fmt.Errorf("redisbp: %w", err)
		}
	}
	switch o.Sharded {
	case ShardedAuto, ShardedOn, ShardedOff:
	default:
		return fmt.Errorf("redisbp: unknown Sharded mode %d", int(o.Sharded))
	}
	if o.DB < 0 {
		return fmt.Errorf("redisbp: negative DB %d", o.DB)
	}
	return nil
}

// ValidChannelPrefix reports why p cannot be a channel prefix, or nil. A
// prefix is a non-empty name of ASCII letters, digits, '.', '_' and '-'
// followed by exactly one ':', at its end ("app:", "tenant-7.prod:").
//
// The rule makes channel names unambiguous: the Redis channel is the
// prefix, then the node's name for it (which begins with a fixed part such
// as "h:<hub>:g:" and ends with whatever name a group, user, connection or
// node has), so the first ':' ends the prefix and no app can choose a
// prefix that reads as the start of another app's channels (a prefix
// "hubfabric:h:chat:g:x:" would otherwise hear the group "x:h:chat:all" of
// the app "hubfabric:", and speak on its node channels). Braces are
// excluded with everything else, so a prefix never moves the hash tag of
// sharded channels. Safe for concurrent use.
func ValidChannelPrefix(p string) error {
	name, ok := strings.CutSuffix(p, ":")
	if ok && name != "" && strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) < 0 {
		return nil
	}
	return fmt.Errorf("channel prefix %q: use letters, digits, '.', '_', '-' and end it with one ':' (like %q)", p, "app:")
}

// UniversalOptions returns the go-redis options NewClient uses, for callers
// who want to adjust them (a Dialer, a TLS config, pool sizes) and build the
// client themselves with redis.NewUniversalClient before passing it to New.
//
// They are tuned so a dead Redis fails fast: one dial attempt bounded by
// ConnectTimeout, one retry with a short backoff, 3 s socket timeouts, and
// context deadlines honoured. (With go-redis' defaults the first PUBLISH to
// a dead Redis blocked ~1.7 s in dial retries.)
func (o Options) UniversalOptions() *redis.UniversalOptions {
	o = o.withDefaults()
	uo := &redis.UniversalOptions{
		Addrs:                 o.Addrs,
		Username:              o.Username,
		Password:              o.Password,
		DB:                    o.DB,
		MasterName:            o.SentinelMaster,
		MaxRetries:            1,
		MinRetryBackoff:       8 * time.Millisecond,
		MaxRetryBackoff:       64 * time.Millisecond,
		DialTimeout:           o.ConnectTimeout,
		DialerRetries:         1,
		DialerRetryTimeout:    50 * time.Millisecond,
		ReadTimeout:           3 * time.Second,
		WriteTimeout:          3 * time.Second,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		// Maintenance notifications are a Redis Enterprise/Cloud feature that
		// Redis 7.0 answers with an error on every connection.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if o.TLS {
		host, _, _ := net.SplitHostPort(o.Addrs[0])
		uo.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return uo
}

// NewClient builds the Redis client described by o: a ClusterClient for
// several Addrs, a sentinel-backed FailoverClient with SentinelMaster, a
// plain Client otherwise (see UniversalOptions for the tuning). The caller
// owns it and closes it after the Backplanes using it.
func (o Options) NewClient() redis.UniversalClient {
	return redis.NewUniversalClient(o.UniversalOptions())
}

// maxConnectTimeoutMs bounds connectTimeout in a connection string (one
// hour).
const maxConnectTimeoutMs = 3_600_000

// ParseConnectionString parses a StackExchange.Redis-style connection
// string,
//
//	host:port[,host:port...][,password=...][,user=...][,ssl=true|false]
//	[,channelPrefix=NAME][,abortConnect=true|false][,serviceName=NAME]
//	[,connectTimeout=MS][,defaultDatabase=N]
//
// or a redis:// or rediss:// URL (parsed by redis.ParseURL). Every
// endpoint is host:port with a port from 1 to 65535 (an IPv6 address in
// brackets: [::1]:6379) and every option is key=value: a segment that is
// neither (a bare word such as "localhost", or a password without its
// "password=") is an error that names it, so it is never looked up as a
// host. Keys are case-insensitive; a key given twice keeps its last value.
// channelPrefix must pass ValidChannelPrefix. Several endpoints mean Redis
// Cluster, serviceName means Sentinel (the endpoints are then sentinels).
// Unknown keys, malformed values and a string without endpoints are errors
// naming the key. Fields the string does not mention keep their zero
// value (the default).
func ParseConnectionString(s string) (Options, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Options{}, errors.New("redisbp: connection string: empty")
	}
	if strings.HasPrefix(s, "redis://") || strings.HasPrefix(s, "rediss://") {
		return parseURL(s)
	}
	var o Options
	for _, tok := range strings.Split(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue // StackExchange.Redis ignores empty segments
		}
		key, val, isOption := strings.Cut(tok, "=")
		if !isOption {
			addr, err := parseEndpoint(tok)
			if err != nil {
				return Options{}, err
			}
			o.Addrs = append(o.Addrs, addr)
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if err := o.setOption(key, val); err != nil {
			return Options{}, err
		}
	}
	if len(o.Addrs) == 0 {
		return Options{}, fmt.Errorf("redisbp: connection string %q: no host:port endpoint", redact(s))
	}
	return o, nil
}

func (o *Options) setOption(key, val string) error {
	switch strings.ToLower(key) {
	case "password":
		o.Password = val
	case "user":
		o.Username = val
	case "ssl":
		b, err := parseBool(key, val)
		if err != nil {
			return err
		}
		o.TLS = b
	case "channelprefix":
		if err := ValidChannelPrefix(val); err != nil {
			return fmt.Errorf("redisbp: connection string: %s: %w", key, err)
		}
		o.ChannelPrefix = val
	case "abortconnect":
		b, err := parseBool(key, val)
		if err != nil {
			return err
		}
		o.AbortConnect = b
	case "servicename":
		if val == "" {
			return fmt.Errorf("redisbp: connection string: %s is empty", key)
		}
		o.SentinelMaster = val
	case "connecttimeout":
		ms, err := strconv.Atoi(val)
		if err != nil || ms < 0 {
			return fmt.Errorf("redisbp: connection string: %s %q is not a number of milliseconds", key, val)
		}
		if ms > maxConnectTimeoutMs {
			// Larger values would overflow time.Duration.
			return fmt.Errorf("redisbp: connection string: %s %d is over the limit of %d ms (1 h)", key, ms, maxConnectTimeoutMs)
		}
		o.ConnectTimeout = time.Duration(ms) * time.Millisecond
	case "defaultdatabase":
		db, err := strconv.Atoi(val)
		if err != nil || db < 0 {
			return fmt.Errorf("redisbp: connection string: %s %q is not a database number", key, val)
		}
		o.DB = db
	case "":
		return fmt.Errorf("redisbp: connection string: option %q has no key", "="+val)
	default:
		return fmt.Errorf("redisbp: connection string: unknown option %q", key)
	}
	return nil
}

func parseBool(key, val string) (bool, error) {
	switch strings.ToLower(val) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("redisbp: connection string: %s %q is not true or false", key, val)
}

// parseEndpoint accepts host:port and [v6]:port, nothing else.
func parseEndpoint(tok string) (string, error) {
	if err := checkEndpoint(tok); errors.Is(err, errNotHostPort) {
		return "", fmt.Errorf("redisbp: connection string: %q: not host:port or key=value", tok)
	} else if err != nil {
		return "", fmt.Errorf("redisbp: connection string: endpoint %q: %w", tok, err)
	}
	host, port, _ := net.SplitHostPort(tok)
	return net.JoinHostPort(host, port), nil
}

var errNotHostPort = errors.New("not host:port")

// checkEndpoint reports why a is not host:port (a numeric port from 1 to
// 65535; an IPv6 host in brackets).
func checkEndpoint(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errNotHostPort
	}
	if host == "" {
		return errors.New("endpoint has no host")
	}
	if strings.ContainsAny(host, "[]") || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("host %q is not a host name or address", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '0' {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

func parseURL(s string) (Options, error) {
	ro, err := redis.ParseURL(s)
	if err != nil {
		return Options{}, fmt.Errorf("redisbp: connection string: URL: %w", err)
	}
	if err := checkEndpoint(ro.Addr); err != nil {
		return Options{}, fmt.Errorf("redisbp: connection string: URL: address %q: %w", ro.Addr, err)
	}
	o := Options{
		Addrs:          []string{ro.Addr},
		Username:       ro.Username,
		Password:       ro.Password,
		DB:             ro.DB,
		TLS:            ro.TLSConfig != nil,
		ConnectTimeout: ro.DialTimeout,
	}
	return o, nil
}

// redact hides password values in s for error messages.
func redact(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok && strings.EqualFold(strings.TrimSpace(k), "password") {
			parts[i] = k + "=***"
		}
	}
	return strings.Join(parts, ",")
}

// RouteLibraryLogs sends go-redis's own log lines (connection pool dial
// failures and the like) to l at Debug level instead of the standard
// logger on stderr: the backplane already reports outages as events and
// warnings. go-redis keeps one global logger, so this affects every client
// in the process.
func RouteLibraryLogs(l *slog.Logger) {
	redis.SetLogger(libraryLogger{l})
}

type libraryLogger struct{ l *slog.Logger }

func (g libraryLogger) Printf(ctx context.Context, format string, v ...any) {
	if g.l.Enabled(ctx, slog.LevelDebug) {
		g.l.DebugContext(ctx, fmt.Sprintf(format, v...))
	}
}
