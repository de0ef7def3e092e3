package service

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Defaults of Config, exported for programs that offer them as settings
// (cmd/node's flags); each is the default of the Config field of the
// matching name.
const (
	// DefaultMaxBodyBytes is Config.MaxBodyBytes's default: 1 MiB, the
	// message size limit of Azure SignalR Service.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultUpstreamTimeout is Config.UpstreamTimeout's default.
	DefaultUpstreamTimeout = 20 * time.Second
	// DefaultUpstreamConcurrency is Config.UpstreamConcurrency's default.
	DefaultUpstreamConcurrency = 64
	// DefaultStoreTimeout is Config.StoreTimeout's default.
	DefaultStoreTimeout = 5 * time.Second
	// DefaultHeartbeatInterval is Config.HeartbeatInterval's default.
	DefaultHeartbeatInterval = 2 * time.Second
	// DefaultHeartbeatTTL is Config.HeartbeatTTL's default: five
	// heartbeats.
	DefaultHeartbeatTTL = 10 * time.Second
	// DefaultSweepBatch is Config.SweepBatch's default.
	DefaultSweepBatch = 1000
	// MaxNameBytes bounds connection ids and user ids in REST paths (group
	// names are bounded by hub.Config.MaxGroupNameBytes).
	MaxNameBytes = 1024
)

// APIVersion is the version of Azure SignalR Service's data-plane REST API
// the service speaks (besides the older /api/v1 paths).
const APIVersion = "2022-06-01"

// Config configures a Service. AccessKeys is required; every other field
// has a documented default.
type Config struct {
	// AccessKeys sign and verify everything: REST API tokens, client access
	// tokens (HS256 with any of them), and upstream signatures (one per key).
	// Several keys allow rotation: tokens signed with any are accepted.
	// Required: at least one non-empty key.
	AccessKeys []string
	// Endpoint is the service's public base URL ("http://host:port", from
	// the connection string's Endpoint), used to check token audiences.
	// Default "": audiences are checked against the request's own scheme
	// and Host.
	Endpoint string
	// Store is the cluster-wide registry (connections, groups, user groups).
	// Default: NewMemoryStore(), for a single node.
	Store Store
	// StoreTimeout bounds each Store call. Default 5 s.
	StoreTimeout time.Duration
	// MaxBodyBytes bounds a REST request's body; longer bodies get 413.
	// Default 1 MiB.
	MaxBodyBytes int64
	// MaxGroupNameBytes bounds group names in REST paths (400 beyond); set
	// it to the node's hub.Config.MaxGroupNameBytes. Default 1024.
	MaxGroupNameBytes int
	// Upstream is the URL template client events and invocations are POSTed
	// to, with {hub}, {category} and {event} placeholders (e.g.
	// "http://backend/api/{hub}/{category}/{event}"). Default "": no
	// upstream; client invocations then fail with an error saying so.
	Upstream string
	// UpstreamHubs, UpstreamCategories and UpstreamEvents restrict which
	// hubs, categories ("connections", "messages") and events (connected,
	// disconnected, or a method name) go upstream: comma-separated names,
	// "*" for any. Default "*" each. Matching is case-insensitive.
	UpstreamHubs, UpstreamCategories, UpstreamEvents string
	// UpstreamTimeout bounds each upstream request. Default 20 s.
	UpstreamTimeout time.Duration
	// UpstreamConcurrency bounds the upstream requests in flight from this
	// node; a request that finds no free slot within a quarter of
	// UpstreamTimeout fails with an error saying so. Default 64.
	UpstreamConcurrency int
	// HeartbeatInterval is how often the node refreshes its liveness in
	// the Store (for each hub) and sweeps the connections of nodes whose
	// heartbeat lapsed. Default 2 s.
	HeartbeatInterval time.Duration
	// HeartbeatTTL is how long a heartbeat keeps the node live: a node
	// that crashed, was killed or lost the Store for longer stops being
	// listed (its connections leave existence checks, presence counts and
	// group member lists) and is swept. At least twice HeartbeatInterval.
	// Default 10 s.
	HeartbeatTTL time.Duration
	// SweepBatch bounds the connections of dead nodes one sweep round (per
	// hub, per HeartbeatInterval) removes. Default 1000.
	SweepBatch int
	// Logger receives the service's logs. Default: discard.
	Logger *slog.Logger
}

// Validate reports the first unusable field.
func (c Config) Validate() error {
	if len(c.AccessKeys) == 0 {
		return errors.New("service: at least one access key is needed")
	}
	for i, k := range c.AccessKeys {
		if k == "" {
			return fmt.Errorf("service: access key %d is empty", i+1)
		}
	}
	if c.Endpoint != "" {
		if err := checkEndpoint(c.Endpoint); err != nil {
			return err
		}
	}
	if c.StoreTimeout < 0 || c.MaxBodyBytes < 0 || c.MaxGroupNameBytes < 0 || c.UpstreamTimeout < 0 || c.UpstreamConcurrency < 0 {
		return errors.New("service: sizes, timeouts and the upstream concurrency must not be negative; zero means the default")
	}
	if c.Upstream != "" {
		if err := checkUpstream(c.Upstream); err != nil {
			return err
		}
	}
	if c.HeartbeatInterval < 0 || c.HeartbeatTTL < 0 || c.SweepBatch < 0 {
		return errors.New("service: the heartbeat interval, its ttl and the sweep batch must not be negative; zero means the default")
	}
	if d := c.withDefaults(); d.HeartbeatTTL < 2*d.HeartbeatInterval {
		return fmt.Errorf("service: heartbeat ttl %s must be at least twice the heartbeat interval %s, so that one late heartbeat does not make a live node look dead", d.HeartbeatTTL, d.HeartbeatInterval)
	}
	return nil
}

func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return fmt.Errorf("service: endpoint %q: want http(s)://host[:port] without path or query", e)
	}
	return nil
}

func checkUpstream(t string) error {
	probe := strings.NewReplacer("{hub}", "h", "{category}", "c", "{event}", "e").Replace(t)
	u, err := url.Parse(probe)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("service: upstream %q: want an http(s) URL template with {hub}, {category} and {event} placeholders", t)
	}
	if strings.ContainsAny(probe, "{}") {
		return fmt.Errorf("service: upstream %q: unknown placeholder; use {hub}, {category} and {event}", t)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Store == nil {
		c.Store = NewMemoryStore()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = DefaultStoreTimeout
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxGroupNameBytes == 0 {
		c.MaxGroupNameBytes = 1024
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if c.UpstreamConcurrency == 0 {
		c.UpstreamConcurrency = DefaultUpstreamConcurrency
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HeartbeatTTL == 0 {
		c.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if c.SweepBatch == 0 {
		c.SweepBatch = DefaultSweepBatch
	}
	for _, p := range []*string{&c.UpstreamHubs, &c.UpstreamCategories, &c.UpstreamEvents} {
		if *p == "" {
			*p = "*"
		}
	}
	c.Endpoint = strings.TrimRight(c.Endpoint, "/")
	return c
}

// ConnectionString is what an Azure SignalR Service connection string
// ("Endpoint=http://host:port;AccessKey=KEY;Version=1.0;") holds.
type ConnectionString struct {
	Endpoint  string
	AccessKey string
}

// ParseConnectionString reads an Azure SignalR Service connection string:
// ';'-separated key=value pairs, keys case-insensitive: Endpoint (required,
// http(s)://host[:port]), AccessKey (required), Version (1.0 if given),
// Port (optional, replaces the endpoint's port). Unknown keys and
// malformed values are errors naming them; the error never repeats the
// access key.
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	var port string
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return cs, errors.New("service: connection string: a part is not key=value")
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "endpoint":
			cs.Endpoint = strings.TrimRight(strings.TrimSpace(v), "/")
		case "accesskey":
			cs.AccessKey = strings.TrimSpace(v)
		case "version":
			if strings.TrimSpace(v) != "1.0" {
				return cs, fmt.Errorf("service: connection string: Version %q: only 1.0 is known", v)
			}
		case "port":
			port = strings.TrimSpace(v)
		default:
			return cs, fmt.Errorf("service: connection string: unknown key %q (known: Endpoint, AccessKey, Version, Port)", strings.TrimSpace(k))
		}
	}
	if cs.Endpoint == "" {
		return cs, errors.New("service: connection string: Endpoint is missing")
	}
	if cs.AccessKey == "" {
		return cs, errors.New("service: connection string: AccessKey is missing")
	}
	if err := checkEndpoint(cs.Endpoint); err != nil {
		return cs, fmt.Errorf("service: connection string: %w", err)
	}
	if port != "" {
		u, _ := url.Parse(cs.Endpoint)
		u.Host = u.Hostname() + ":" + port
		cs.Endpoint = u.String()
		if err := checkEndpoint(cs.Endpoint); err != nil {
			return cs, fmt.Errorf("service: connection string: Port %q: %w", port, err)
		}
	}
	return cs, nil
}
