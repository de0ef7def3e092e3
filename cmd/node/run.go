package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hubfabric/hubfabric/auth"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/internal/cliflag"
	"github.com/hubfabric/hubfabric/service"
)

// options are the node's settings after flags and environment.
type options struct {
	addr            string
	hubs            []string
	jwtSecret       string
	tokenSecret     string
	nodeID          string
	redis           string
	channelPrefix   string // "" keeps the connection string's (or the backplane's default)
	groupAckTimeout time.Duration
	logFormat       string
	logLevel        slog.Level
	allowedOrigins  []string
	shutdownTimeout time.Duration
	pprofAddr       string

	// Connection limits (hub.Config).
	maxMessageSize   int
	maxOutboundBytes int
	keepAlive        time.Duration
	clientTimeout    time.Duration
	handshakeTimeout time.Duration
	maxPending       int
	maxPendingBytes  int
	maxStreams       int
	maxGroups        int
	maxGroupName     int

	// HTTP transports besides WebSockets (hub.Config).
	longPolling      bool
	serverSentEvents bool
	pollTimeout      time.Duration
	// Stateful reconnect (hub.Config).
	statefulReconnect bool
	statefulBuffer    int
	statefulWindow    time.Duration

	// HTTP server limits (http.Server).
	httpReadTimeout    time.Duration
	httpIdleTimeout    time.Duration
	httpMaxHeaderBytes int

	// Service mode (service.go).
	svc serviceOptions
}

// Defaults of the HTTP server's limits. The read timeout bounds a request's
// headers and body (a client that announces a body and sends none is cut
// off then); WebSockets are hijacked, which clears the connection's
// deadlines, so they outlive it.
const (
	defaultHTTPReadTimeout    = 20 * time.Second
	defaultHTTPIdleTimeout    = 120 * time.Second
	defaultHTTPMaxHeaderBytes = 64 << 10
	// readHeaderTimeout bounds the request headers (at most the read timeout).
	readHeaderTimeout = 10 * time.Second
)

// secretFlags are flags whose explicitly empty value is refused: an empty
// --jwt-secret would turn authentication off, an empty --token-secret
// would look shared between nodes while each node picks a random one.
var secretFlags = append([]string{"jwt-secret", "token-secret"}, serviceSecretFlags...)

// parseOptions reads flags, then fills flags not given from the
// environment (HUBFABRIC_<NAME>; an empty variable counts as unset, except
// for the secrets, where it is an error like an empty flag).
func parseOptions(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (options, error) {
	o := options{hubs: []string{"chat"}}
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", ":8080", "HTTP listen address")
	fs.Var(&cliflag.List{Vals: &o.hubs}, "hub", "hub name served at /hubs/NAME with the relay methods (repeatable or comma-separated)")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "HS256 secret; when set, negotiate and connect require a valid JWT whose sub is the user id")
	fs.StringVar(&o.tokenSecret, "token-secret", "", "secret for connection tokens, shared by the nodes of a cluster (default: random per node)")
	fs.StringVar(&o.nodeID, "node-id", "", "node id on the backplane (default: random)")
	fs.StringVar(&o.redis, "redis", "", "Redis backplane connection string (empty: in-memory backplane, one node)")
	fs.StringVar(&o.channelPrefix, "channel-prefix", "", "Redis channel prefix isolating apps that share one Redis: letters, digits, '.', '_', '-' ended by one ':' (e.g. \"app1:\"); overrides the connection string's channelPrefix (default: the string's, else \"hubfabric:\")")
	fs.DurationVar(&o.groupAckTimeout, "group-ack-timeout", hub.DefaultGroupAckTimeout, "how long a group change for a connection on another node waits for that node")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.Var(&cliflag.List{Vals: &o.allowedOrigins}, "allowed-origins", "browser origin host patterns allowed cross-origin, e.g. *.example.com (repeatable or comma-separated)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long graceful shutdown may take")
	fs.StringVar(&o.pprofAddr, "pprof", "", "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (default: off)")
	fs.IntVar(&o.maxMessageSize, "max-message-size", hub.DefaultMaxMessageSize, "bytes of one hub message from a client; a longer one gets a Close message naming the limit")
	fs.IntVar(&o.maxOutboundBytes, "max-outbound-bytes", hub.DefaultMaxOutboundBytes, "bytes that may wait for one slow client before it is closed")
	fs.DurationVar(&o.keepAlive, "keep-alive-interval", hub.DefaultKeepAliveInterval, "a Ping goes to a client that was sent nothing for this long")
	fs.DurationVar(&o.clientTimeout, "client-timeout", hub.DefaultClientTimeout, "a client that sent nothing (not even a Ping) for this long is closed")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", hub.DefaultHandshakeTimeout, "how long a new connection may take to send its handshake")
	fs.IntVar(&o.maxPending, "max-pending-invocations", hub.DefaultMaxPendingInvocations, "invocations of one client that may wait for a free slot; past it (or --max-pending-invocation-bytes) the node stops reading that client until a call starts")
	fs.IntVar(&o.maxPendingBytes, "max-pending-invocation-bytes", hub.DefaultMaxPendingInvocationBytes, "bytes of the invocations of one client that may wait for a free slot")
	fs.IntVar(&o.maxStreams, "max-streams-per-connection", hub.DefaultMaxStreamsPerConnection, "server and upload streams one client may have open; an invocation past it fails with an error naming the limit")
	fs.IntVar(&o.maxGroups, "max-groups-per-connection", hub.DefaultMaxGroupsPerConnection, "groups one connection may be in; an add past it fails with an error naming the limit")
	fs.IntVar(&o.maxGroupName, "max-group-name-bytes", hub.DefaultMaxGroupNameBytes, "bytes of a group name; longer ones are refused in group changes and sends")
	fs.BoolVar(&o.longPolling, "long-polling", true, "offer the LongPolling transport (JSON and MessagePack); --long-polling=false turns it off")
	fs.BoolVar(&o.serverSentEvents, "server-sent-events", true, "offer the ServerSentEvents transport (JSON only); --server-sent-events=false turns it off")
	fs.DurationVar(&o.pollTimeout, "poll-timeout", hub.DefaultPollTimeout, "how long a long poll waits for something to send before it is answered empty (the client gives up after 100s)")
	fs.BoolVar(&o.statefulReconnect, "stateful-reconnect", false, "grant stateful reconnect (withStatefulReconnect) to clients that ask: a dropped WebSocket's connection waits for the client to reconnect and resends what it missed")
	fs.IntVar(&o.statefulBuffer, "stateful-reconnect-buffer-size", hub.DefaultStatefulReconnectBufferSize, "bytes sent to one stateful connection that may wait for its client's Ack; past it sending to it waits")
	fs.DurationVar(&o.statefulWindow, "stateful-reconnect-window", hub.DefaultStatefulReconnectWindow, "how long a stateful connection whose WebSocket dropped waits for the client to reconnect")
	fs.DurationVar(&o.httpReadTimeout, "http-read-timeout", defaultHTTPReadTimeout, "bound on reading one HTTP request, headers and body (WebSockets are not cut by it)")
	fs.DurationVar(&o.httpIdleTimeout, "http-idle-timeout", defaultHTTPIdleTimeout, "how long an idle keep-alive HTTP connection is kept open")
	fs.IntVar(&o.httpMaxHeaderBytes, "http-max-header-bytes", defaultHTTPMaxHeaderBytes, "bytes of one HTTP request's headers, request line included")
	o.svc.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, usageError{err}
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintln(stderr, err)
		return o, usageError{err}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if envErr != nil {
			return
		}
		if given[f.Name] {
			if slices.Contains(secretFlags, f.Name) && f.Value.String() == "" {
				envErr = fmt.Errorf("--%s is empty: give a secret or leave the flag out", f.Name)
			}
			return
		}
		key := "HUBFABRIC_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, set := lookupEnv(key)
		if set && v == "" && slices.Contains(secretFlags, f.Name) {
			envErr = fmt.Errorf("%s is set but empty: give a secret or unset it", key)
			return
		}
		if v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("invalid %s=%q: %v", key, v, err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintln(stderr, envErr)
		return o, usageError{envErr}
	}
	if err := o.validate(*level); err != nil {
		fmt.Fprintln(stderr, err)
		return o, usageError{err}
	}
	return o, nil
}

func (o *options) validate(level string) error {
	if len(o.hubs) == 0 {
		return errors.New("--hub: at least one hub name is needed")
	}
	seen := map[string]bool{}
	for _, h := range o.hubs {
		if !hub.ValidHubName(h) {
			return fmt.Errorf("--hub %q: use 1-64 letters, digits, '-', '_' or '.'", h)
		}
		if seen[h] {
			return fmt.Errorf("--hub %q given twice", h)
		}
		seen[h] = true
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"group-ack-timeout", o.groupAckTimeout}, {"shutdown-timeout", o.shutdownTimeout},
		{"keep-alive-interval", o.keepAlive}, {"client-timeout", o.clientTimeout}, {"handshake-timeout", o.handshakeTimeout},
		{"http-read-timeout", o.httpReadTimeout}, {"http-idle-timeout", o.httpIdleTimeout},
		{"poll-timeout", o.pollTimeout},
		{"stateful-reconnect-window", o.statefulWindow},
	} {
		if d.v <= 0 {
			return fmt.Errorf("--%s must be positive (got %s)", d.name, d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"max-message-size", o.maxMessageSize}, {"max-outbound-bytes", o.maxOutboundBytes}, {"http-max-header-bytes", o.httpMaxHeaderBytes},
		{"max-pending-invocations", o.maxPending}, {"max-pending-invocation-bytes", o.maxPendingBytes},
		{"max-streams-per-connection", o.maxStreams}, {"max-groups-per-connection", o.maxGroups}, {"max-group-name-bytes", o.maxGroupName},
		{"stateful-reconnect-buffer-size", o.statefulBuffer},
	} {
		if n.v <= 0 {
			return fmt.Errorf("--%s must be positive (got %d)", n.name, n.v)
		}
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return fmt.Errorf("--log-format %q: use text or json", o.logFormat)
	}
	if err := o.logLevel.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	if err := (hub.Config{AllowedOrigins: o.allowedOrigins}).Validate(); err != nil {
		return fmt.Errorf("--allowed-origins: %v", err)
	}
	if o.channelPrefix != "" && o.redis == "" {
		return errors.New("--channel-prefix needs --redis: the in-memory backplane serves one node and has no channels to keep apart")
	}
	if o.channelPrefix != "" {
		if err := redisbp.ValidChannelPrefix(o.channelPrefix); err != nil {
			return fmt.Errorf("--channel-prefix: %v", err)
		}
	}
	if o.redis != "" {
		if _, err := redisbp.ParseConnectionString(o.redis); err != nil {
			return fmt.Errorf("--redis: %v", err)
		}
	}
	if err := o.svc.validate(o); err != nil {
		return err
	}
	if err := checkListenAddr("addr", o.addr); err != nil {
		return err
	}
	if o.pprofAddr != "" {
		if err := checkListenAddr("pprof", o.pprofAddr); err != nil {
			return err
		}
	}
	return nil
}

// checkListenAddr catches what net.Listen would refuse for the address's
// form (a missing or out-of-range port), so it is a usage error; an address
// that is well formed but cannot be bound (in use, not this host's) fails
// later, at listen.
func checkListenAddr(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		return fmt.Errorf("--%s %q: %v", flag, addr, err)
	}
	return nil
}

// usage prints err, a configuration error found after parsing, and marks it
// as one (exit status 2).
func usage(stderr io.Writer, err error) error {
	fmt.Fprintln(stderr, err)
	return usageError{err}
}

// hubConfig is the node's hub.Config from the options, without the
// backplane and the authenticator, which run adds.
func (o *options) hubConfig(log *slog.Logger) hub.Config {
	cfg := hub.Config{
		NodeID: o.nodeID, Logger: log, GroupAckTimeout: o.groupAckTimeout, AllowedOrigins: o.allowedOrigins,
		MaxMessageSize: o.maxMessageSize, MaxOutboundBytes: o.maxOutboundBytes,
		KeepAliveInterval: o.keepAlive, ClientTimeout: o.clientTimeout, HandshakeTimeout: o.handshakeTimeout,
		MaxPendingInvocations: o.maxPending, MaxPendingInvocationBytes: o.maxPendingBytes,
		MaxStreamsPerConnection: o.maxStreams, MaxGroupsPerConnection: o.maxGroups, MaxGroupNameBytes: o.maxGroupName,
		DisableLongPolling: !o.longPolling, DisableServerSentEvents: !o.serverSentEvents, PollTimeout: o.pollTimeout,
		StatefulReconnect: o.statefulReconnect, StatefulReconnectBufferSize: o.statefulBuffer, StatefulReconnectWindow: o.statefulWindow,
	}
	if o.tokenSecret != "" {
		cfg.TokenSecret = []byte(o.tokenSecret)
	}
	return cfg
}

// run is the whole program: it returns when ctx ends (a signal) and the
// node has shut down, or on a startup or serve error.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	o, err := parseOptions(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	hopts := &slog.HandlerOptions{Level: o.logLevel}
	var lh slog.Handler = slog.NewTextHandler(stderr, hopts)
	if o.logFormat == "json" {
		lh = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(lh)

	cfg := o.hubConfig(log)
	// Checked before the backplane exists, so a bad setting leaves nothing
	// to close.
	if err := cfg.Validate(); err != nil {
		return usage(stderr, err)
	}
	if o.redis != "" {
		redisbp.RouteLibraryLogs(log.With("component", "go-redis"))
		bp, err := redisbp.NewFromString(o.redis, func(ro *redisbp.Options) {
			ro.Logger = log.With("component", "redis")
			if o.channelPrefix != "" {
				ro.ChannelPrefix = o.channelPrefix
			}
		})
		if err != nil {
			return usage(stderr, fmt.Errorf("--redis: %w", err))
		}
		cfg.Backplane = bp
	}
	if o.jwtSecret != "" {
		a, err := auth.HS256([]byte(o.jwtSecret))
		if err != nil {
			return err
		}
		cfg.Authenticator = a
	}
	// The node's metrics, with the Go runtime's and the process's, on
	// GET /metrics of the main address.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Metrics = reg
	var svc *service.Service
	if o.svc.enabled() {
		if svc, cfg.Backplane, err = o.svc.newService(log, o.maxGroupName, cfg.Backplane); err != nil {
			return usage(stderr, err)
		}
		defer svc.Close()
		cfg.Authenticator = svc.Authenticator()
	}
	node, err := hub.New(cfg)
	if err != nil {
		return err
	}
	for _, h := range o.hubs {
		if svc != nil {
			err = svc.Register(node, h)
		} else {
			err = node.Register(h, relay{nodeID: node.ID()})
		}
		if err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", node.Handler())
	if svc != nil {
		mux.Handle("/api/", svc.Handler(node.Handler()))
		mux.Handle("/client/", svc.Handler(node.Handler()))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(lh.WithAttrs([]slog.Attr{slog.String("component", "metrics")}), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, why := node.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = io.WriteString(w, why+"\n")
	})
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		_ = node.Shutdown(context.Background())
		return fmt.Errorf("listen on %s: %w", o.addr, err)
	}
	httpLog := slog.NewLogLogger(lh.WithAttrs([]slog.Attr{slog.String("component", "http")}), slog.LevelWarn)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: min(readHeaderTimeout, o.httpReadTimeout),
		ReadTimeout:       o.httpReadTimeout,
		IdleTimeout:       o.httpIdleTimeout,
		MaxHeaderBytes:    o.httpMaxHeaderBytes,
		ErrorLog:          httpLog,
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	if o.pprofAddr != "" {
		pln, err := net.Listen("tcp", o.pprofAddr)
		if err != nil {
			_ = srv.Close()
			_ = node.Shutdown(context.Background())
			return fmt.Errorf("--pprof: listen on %s: %w", o.pprofAddr, err)
		}
		// No cmdline handler: the command line holds the secrets
		// (--jwt-secret, --token-secret, the --redis password). Index
		// answers 404 for /debug/pprof/cmdline, as for any unknown profile.
		pmux := http.NewServeMux()
		pmux.HandleFunc("/debug/pprof/", pprof.Index)
		pmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		psrv := &http.Server{
			Handler: pmux, ReadHeaderTimeout: min(readHeaderTimeout, o.httpReadTimeout), ReadTimeout: o.httpReadTimeout,
			IdleTimeout: o.httpIdleTimeout, MaxHeaderBytes: o.httpMaxHeaderBytes, ErrorLog: httpLog,
		}
		go func() {
			if err := psrv.Serve(pln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("pprof server: %w", err)
			}
		}()
		defer psrv.Close()
		log.Info("pprof listening", "addr", pln.Addr().String())
	}
	backplaneName := "memory"
	if o.redis != "" {
		backplaneName = "redis"
	}
	// Serving starts before the node does: while Start waits for an
	// unreachable backplane, /healthz answers 200, /readyz 503 and the hubs
	// 503, at once.
	log.Info("listening", "addr", ln.Addr().String(), "hubs", strings.Join(o.hubs, ","), "node_id", node.ID(), "backplane", backplaneName)
	if err := node.Start(ctx); err != nil {
		_ = srv.Close()
		_ = node.Shutdown(context.Background())
		return err
	}
	if svc != nil {
		if err := svc.Start(ctx, node); err != nil {
			_ = srv.Close()
			_ = node.Shutdown(context.Background())
			return err
		}
		log.Info("service mode", "upstream", o.svc.upstream != "", "access_keys", len(o.svc.accessKeys))
	}
	log.Info("started")

	select {
	case err = <-serveErr:
		log.Error("http server failed", "err", err)
	case <-ctx.Done():
		log.Info("shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	// The node closes its WebSockets (hijacked, so the HTTP server does not
	// track them); then the HTTP server stops.
	nodeErr := node.Shutdown(sctx)
	httpErr := srv.Shutdown(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	if nodeErr != nil {
		return nodeErr
	}
	if httpErr != nil {
		return fmt.Errorf("http shutdown: %w", httpErr)
	}
	log.Info("stopped")
	return nil
}
