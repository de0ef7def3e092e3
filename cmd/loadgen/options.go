package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/hubfabric/hubfabric/internal/cliflag"
)

// options are loadgen's settings after flags.
type options struct {
	urls               []string
	clients            int
	groups             int
	rates              []float64
	warmup             time.Duration
	duration           time.Duration
	drain              time.Duration
	pids               []int
	redisPIDs          []int
	mode               string
	jsonPath           string
	markdownPath       string
	quick              bool
	token              string
	connectRate        float64
	connectConcurrency int
	joinTimeout        time.Duration
	pingInterval       time.Duration
	negotiate          bool
	localAddrs         []string
	seed               int64
	progress           bool
	chaos              chaosOptions
}

// Quick-mode defaults; flags given explicitly win over them.
const (
	quickClients  = 40
	quickGroups   = 4
	quickRate     = 200
	quickWarmup   = 500 * time.Millisecond
	quickDuration = 2 * time.Second
	quickDrain    = 5 * time.Second
)

// usageError is a bad flag or value; its message was already printed.
type usageError struct{ error }

const usageHead = `loadgen drives a hubfabric (SignalR JSON) deployment and measures it.

Modes:
  fanout  C clients in G groups whose members alternate nodes; one publisher
          per group (its member 0, which also receives) calls the hub method
          SendToGroup(group, "m", payload) without an invocation id, open loop,
          at a total rate R, for every rate of --rates (warm-up, then a
          measured window, then a drain). Reports offered and delivered
          msgs/s, loss, duplicates, reorders, latency p50/p99/p999, CPU
          seconds per 1M deliveries of --pids and --redis-pids, RSS.
  idle    C connections that only keep alive; reports node RSS growth per
          connection (--pids in the order of --url maps RSS to each node).
  chaos   the fanout workload at one rate on the clients left after
          --non-readers (stop reading; the node must close them) and
          --droppers (drop TCP and reconnect, repeatedly), in --rounds of a
          baseline phase and a chaos phase; reports per phase offered and
          delivered msgs/s, loss, latency, node RSS and goroutines (--pprof);
          exit 1 on loss, a non-reader left open, goroutines not back, or a
          median throughput drop of 5% or more.

The hub must offer JoinGroup(group) and SendToGroup(group, target, args...)
(the relay hub of cmd/node does). --quick without --url starts two in-process
nodes on an in-memory bus and fails (exit 1) on any loss, duplicate or reorder.

Flags:
`

// parseOptions parses args. Errors are printed to stderr and returned as
// usageError.
func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	var rates, pids, redisPIDs []string
	fs.Var(&cliflag.List{Vals: &o.urls}, "url", "hub URL, e.g. http://127.0.0.1:8080/hubs/chat (repeatable or comma-separated; clients are spread over them)")
	fs.IntVar(&o.clients, "clients", 2000, "number of client connections")
	fs.IntVar(&o.groups, "groups", 200, "fanout: number of groups (clients are split evenly; at most --clients)")
	fs.Var(&cliflag.List{Vals: &rates}, "rates", "fanout: total publish rates in msgs/s, stepped through in order (default 1000,5000,10000)")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Second, "fanout: unmeasured warm-up at each rate before the measured window; idle: settle time before the RSS sample")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "fanout: measured window per rate; idle: how long the connections are held after settling")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "fanout: longest wait after each step for outstanding deliveries (ends early when all arrived)")
	fs.Var(&cliflag.List{Vals: &pids}, "pids", "node PIDs for CPU and RSS from /proc (comma list; in --url order to get per-node idle figures)")
	fs.Var(&cliflag.List{Vals: &redisPIDs}, "redis-pids", "Redis PIDs for CPU and RSS from /proc (comma list)")
	fs.StringVar(&o.mode, "mode", "fanout", "workload: fanout, idle or faults (see faults.go: in-process nodes on its own redis-server)")
	fs.StringVar(&o.jsonPath, "json", "", "write results as JSON to this file (- for stdout)")
	fs.StringVar(&o.markdownPath, "markdown", "", "write the results table as Markdown to this file (it is always printed on stdout too)")
	fs.BoolVar(&o.quick, "quick", false, "small fanout self-check: 40 clients, 4 groups, 200 msgs/s, 0.5 s warm-up, 2 s window unless set; exit 1 on loss, duplicates or reorders")
	fs.StringVar(&o.token, "token", "", "bearer token sent as Authorization on negotiate and connect")
	fs.Float64Var(&o.connectRate, "connect-rate", 1000, "new connections per second while connecting")
	fs.IntVar(&o.connectConcurrency, "connect-concurrency", 256, "connections being set up at once")
	fs.DurationVar(&o.joinTimeout, "join-timeout", 30*time.Second, "longest wait for one connect+handshake+JoinGroup")
	fs.DurationVar(&o.pingInterval, "ping-interval", 15*time.Second, "each client sends a SignalR Ping this often (the JS client's keep-alive)")
	fs.BoolVar(&o.negotiate, "negotiate", false, "POST /negotiate before each WebSocket (default: skipNegotiation, one round trip less)")
	fs.Var(&cliflag.List{Vals: &o.localAddrs}, "local-addrs", "local IPs to dial from, round-robin (e.g. 127.0.0.2,127.0.0.3 to pass ~28k connections per target on loopback)")
	fs.Int64Var(&o.seed, "seed", 1, "seed for the publishers' start offsets")
	fs.BoolVar(&o.progress, "progress", true, "live progress line on stderr")
	chaosFlags(fs, &o.chaos)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, usageError{err}
		}
		return o, usageError{err}
	}
	fail := func(err error) (options, error) {
		fmt.Fprintln(stderr, "loadgen:", err)
		return o, usageError{err}
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if o.quick {
		if !given["clients"] {
			o.clients = quickClients
		}
		if !given["groups"] {
			o.groups = quickGroups
		}
		if !given["rates"] {
			rates = []string{strconv.Itoa(quickRate)}
		}
		if !given["warmup"] {
			o.warmup = quickWarmup
		}
		if !given["duration"] {
			o.duration = quickDuration
		}
		if !given["drain"] {
			o.drain = quickDrain
		}
		if given["mode"] && o.mode != "fanout" {
			return fail(fmt.Errorf("--quick runs the fanout mode, not --mode %s", o.mode))
		}
	}
	if !given["rates"] && !o.quick {
		rates = []string{"1000", "5000", "10000"}
	}
	var err error
	if o.rates, err = parseRates(rates); err != nil {
		return fail(err)
	}
	if o.pids, err = parsePIDs("--pids", pids); err != nil {
		return fail(err)
	}
	if o.redisPIDs, err = parsePIDs("--redis-pids", redisPIDs); err != nil {
		return fail(err)
	}
	if err := o.validate(); err != nil {
		return fail(err)
	}
	return o, nil
}

func parseRates(vals []string) ([]float64, error) {
	if len(vals) == 0 {
		return nil, errors.New("--rates: give at least one rate")
	}
	out := make([]float64, 0, len(vals))
	for _, v := range vals {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 || r > 1e7 {
			return nil, fmt.Errorf("--rates %q: each rate must be a number of msgs/s in (0, 1e7]", v)
		}
		out = append(out, r)
	}
	return out, nil
}

func parsePIDs(name string, vals []string) ([]int, error) {
	var out []int
	for _, v := range vals {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("%s %q: want positive process ids", name, v)
		}
		out = append(out, p)
	}
	return out, nil
}

func (o *options) validate() error {
	if o.mode != "fanout" && o.mode != "idle" && o.mode != "chaos" && o.mode != faultsMode {
		return fmt.Errorf("--mode %q: use fanout, idle, chaos or faults", o.mode)
	}
	if o.mode == "chaos" {
		if err := o.chaos.resolve(o); err != nil {
			return err
		}
	}
	if len(o.urls) == 0 && !o.quick && o.mode != faultsMode {
		return errors.New("--url: give at least one hub URL, e.g. --url http://127.0.0.1:8080/hubs/chat")
	}
	for _, raw := range o.urls {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("--url %q: %v", raw, err)
		}
		switch u.Scheme {
		case "http", "https", "ws", "wss":
		default:
			return fmt.Errorf("--url %q: the scheme must be http, https, ws or wss", raw)
		}
		if u.Host == "" {
			return fmt.Errorf("--url %q: no host", raw)
		}
	}
	if o.clients < 1 {
		return fmt.Errorf("--clients must be at least 1 (got %d)", o.clients)
	}
	if o.mode == "fanout" {
		if o.groups < 1 || o.groups > o.clients {
			return fmt.Errorf("--groups must be between 1 and --clients (%d) (got %d)", o.clients, o.groups)
		}
		if o.duration <= 0 {
			return fmt.Errorf("--duration must be positive (got %s)", o.duration)
		}
	}
	if o.mode == "idle" && o.duration < 0 {
		return fmt.Errorf("--duration must not be negative (got %s)", o.duration)
	}
	if o.warmup < 0 {
		return fmt.Errorf("--warmup must not be negative (got %s)", o.warmup)
	}
	if o.drain < 0 {
		return fmt.Errorf("--drain must not be negative (got %s)", o.drain)
	}
	if o.connectRate <= 0 {
		return fmt.Errorf("--connect-rate must be positive (got %g)", o.connectRate)
	}
	if o.connectConcurrency < 1 {
		return fmt.Errorf("--connect-concurrency must be at least 1 (got %d)", o.connectConcurrency)
	}
	if o.joinTimeout <= 0 {
		return fmt.Errorf("--join-timeout must be positive (got %s)", o.joinTimeout)
	}
	if o.pingInterval <= 0 {
		return fmt.Errorf("--ping-interval must be positive (got %s)", o.pingInterval)
	}
	for _, a := range o.localAddrs {
		if net.ParseIP(a) == nil {
			return fmt.Errorf("--local-addrs %q: not an IP address", a)
		}
	}
	return nil
}
