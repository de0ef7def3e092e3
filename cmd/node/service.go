package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/internal/cliflag"
	"github.com/hubfabric/hubfabric/service"
)

// serviceOptions are the flags of service mode (package service).
type serviceOptions struct {
	accessKeys          []string
	connectionString    string
	upstream            string
	upstreamHubs        string
	upstreamCategories  string
	upstreamEvents      string
	upstreamTimeout     time.Duration
	upstreamConcurrency int
	maxBodyBytes        int
	heartbeatInterval   time.Duration
	heartbeatTTL        time.Duration
	sweepBatch          int
	endpoint            string // from the connection string
}

// serviceSecretFlags are refused when explicitly empty, as secretFlags.
var serviceSecretFlags = []string{"access-key", "connection-string"}

func (so *serviceOptions) addFlags(fs *flag.FlagSet) {
	fs.Var(&cliflag.List{Vals: &so.accessKeys}, "access-key", "service mode: access key signing REST API and client tokens and upstream signatures (repeatable or comma-separated, for rotation)")
	fs.StringVar(&so.connectionString, "connection-string", "", "service mode: Azure SignalR connection string Endpoint=http://host:port;AccessKey=KEY;Version=1.0;")
	fs.StringVar(&so.upstream, "upstream", "", "service mode: upstream URL template, e.g. http://backend/api/{hub}/{category}/{event} (default: none; client invocations then fail)")
	fs.StringVar(&so.upstreamHubs, "upstream-hubs", "*", "service mode: hubs whose events go upstream (comma-separated, * for any)")
	fs.StringVar(&so.upstreamCategories, "upstream-categories", "*", "service mode: categories that go upstream: connections, messages (comma-separated, * for any)")
	fs.StringVar(&so.upstreamEvents, "upstream-events", "*", "service mode: events that go upstream: connected, disconnected, method names (comma-separated, * for any)")
	fs.DurationVar(&so.upstreamTimeout, "upstream-timeout", service.DefaultUpstreamTimeout, "service mode: bound on one upstream request, waiting for a slot included")
	fs.IntVar(&so.upstreamConcurrency, "upstream-concurrency", service.DefaultUpstreamConcurrency, "service mode: upstream requests in flight from one node")
	fs.IntVar(&so.maxBodyBytes, "max-rest-body-bytes", service.DefaultMaxBodyBytes, "service mode: bytes of one REST API request body (413 beyond)")
	fs.DurationVar(&so.heartbeatInterval, "store-heartbeat-interval", service.DefaultHeartbeatInterval, "service mode: how often a node refreshes its liveness in the registry and sweeps dead nodes' connections")
	fs.DurationVar(&so.heartbeatTTL, "store-heartbeat-ttl", service.DefaultHeartbeatTTL, "service mode: how long a node's connections stay listed after its last heartbeat (at least twice --store-heartbeat-interval)")
	fs.IntVar(&so.sweepBatch, "store-sweep-batch", service.DefaultSweepBatch, "service mode: dead nodes' connections one sweep round removes, per hub")
}

// enabled reports whether service mode is on.
func (so *serviceOptions) enabled() bool {
	return len(so.accessKeys) > 0 || so.connectionString != ""
}

func (so *serviceOptions) validate(o *options) error {
	if so.connectionString != "" {
		cs, err := service.ParseConnectionString(so.connectionString)
		if err != nil {
			return fmt.Errorf("--connection-string: %v", err)
		}
		so.endpoint = cs.Endpoint
		so.accessKeys = append([]string{cs.AccessKey}, so.accessKeys...)
	}
	if !so.enabled() {
		if so.upstream != "" {
			return errors.New("--upstream needs service mode (--access-key or --connection-string)")
		}
		return nil
	}
	if o.jwtSecret != "" {
		return errors.New("--jwt-secret and service mode exclude each other: in service mode clients connect with access tokens signed by the access key")
	}
	if so.upstreamTimeout <= 0 {
		return fmt.Errorf("--upstream-timeout must be positive (got %s)", so.upstreamTimeout)
	}
	if so.upstreamConcurrency <= 0 {
		return fmt.Errorf("--upstream-concurrency must be positive (got %d)", so.upstreamConcurrency)
	}
	if so.maxBodyBytes <= 0 {
		return fmt.Errorf("--max-rest-body-bytes must be positive (got %d)", so.maxBodyBytes)
	}
	if so.heartbeatInterval <= 0 {
		return fmt.Errorf("--store-heartbeat-interval must be positive (got %s)", so.heartbeatInterval)
	}
	if so.heartbeatTTL < 2*so.heartbeatInterval {
		return fmt.Errorf("--store-heartbeat-ttl (%s) must be at least twice --store-heartbeat-interval (%s), so that one late heartbeat does not make a live node look dead", so.heartbeatTTL, so.heartbeatInterval)
	}
	if so.sweepBatch <= 0 {
		return fmt.Errorf("--store-sweep-batch must be positive (got %d)", so.sweepBatch)
	}
	if err := so.config(nil, 0).Validate(); err != nil {
		return err
	}
	return nil
}

func (so *serviceOptions) config(log *slog.Logger, maxGroupName int) service.Config {
	return service.Config{
		AccessKeys: so.accessKeys, Endpoint: so.endpoint, MaxBodyBytes: int64(so.maxBodyBytes), MaxGroupNameBytes: maxGroupName,
		Upstream: so.upstream, UpstreamHubs: so.upstreamHubs, UpstreamCategories: so.upstreamCategories, UpstreamEvents: so.upstreamEvents,
		UpstreamTimeout: so.upstreamTimeout, UpstreamConcurrency: so.upstreamConcurrency, Logger: log,
		HeartbeatInterval: so.heartbeatInterval, HeartbeatTTL: so.heartbeatTTL, SweepBatch: so.sweepBatch,
	}
}

// newService builds the service and wraps bp (nil: a new in-memory
// backplane). With the Redis backplane the store is on the same Redis.
func (so *serviceOptions) newService(log *slog.Logger, maxGroupName int, bp backplane.Backplane) (*service.Service, backplane.Backplane, error) {
	cfg := so.config(log.With("component", "service"), maxGroupName)
	if rb, ok := bp.(*redisbp.Backplane); ok {
		cfg.Store = redisbp.NewStore(rb)
	}
	svc, err := service.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	if bp == nil {
		bp = backplane.NewMemory()
	}
	return svc, svc.Backplane(bp), nil
}
