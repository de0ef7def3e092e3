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
	"strings"
	"time"

	"github.com/hubfabric/hubfabric/auth"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/internal/cliflag"
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
}

// parseOptions reads flags, then fills flags not given from the
// environment (HUBFABRIC_<NAME>).
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
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
		if given[f.Name] || envErr != nil {
			return
		}
		key := "HUBFABRIC_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(key); v != "" {
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
	if o.groupAckTimeout <= 0 {
		return fmt.Errorf("--group-ack-timeout must be positive (got %s)", o.groupAckTimeout)
	}
	if o.shutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout must be positive (got %s)", o.shutdownTimeout)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return fmt.Errorf("--log-format %q: use text or json", o.logFormat)
	}
	if err := o.logLevel.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
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
	if _, _, err := net.SplitHostPort(o.addr); err != nil {
		return fmt.Errorf("--addr %q: %v", o.addr, err)
	}
	if o.pprofAddr != "" {
		if _, _, err := net.SplitHostPort(o.pprofAddr); err != nil {
			return fmt.Errorf("--pprof %q: %v", o.pprofAddr, err)
		}
	}
	return nil
}

// run is the whole program: it returns when ctx ends (a signal) and the
// node has shut down, or on a startup or serve error.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	o, err := parseOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	hopts := &slog.HandlerOptions{Level: o.logLevel}
	var lh slog.Handler = slog.NewTextHandler(stderr, hopts)
	if o.logFormat == "json" {
		lh = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(lh)

	cfg := hub.Config{NodeID: o.nodeID, Logger: log, GroupAckTimeout: o.groupAckTimeout, AllowedOrigins: o.allowedOrigins}
	if o.tokenSecret != "" {
		cfg.TokenSecret = []byte(o.tokenSecret)
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
			return fmt.Errorf("--redis: %w", err)
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
	node, err := hub.New(cfg)
	if err != nil {
		return err
	}
	for _, h := range o.hubs {
		if err := node.Register(h, relay{nodeID: node.ID()}); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", node.Handler())
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(lh, slog.LevelDebug)}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	if o.pprofAddr != "" {
		pln, err := net.Listen("tcp", o.pprofAddr)
		if err != nil {
			_ = srv.Close()
			_ = node.Shutdown(context.Background())
			return fmt.Errorf("--pprof: listen on %s: %w", o.pprofAddr, err)
		}
		pmux := http.NewServeMux()
		pmux.HandleFunc("/debug/pprof/", pprof.Index)
		pmux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		pmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		psrv := &http.Server{Handler: pmux, ReadHeaderTimeout: 10 * time.Second}
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
