package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, protoactorThrottle) }

// protoactorThrottle is protoactor's dead-letter log throttle: a goroutine
// per actor system that outlives its shutdown.
var protoactorThrottle = goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")

func TestBadFlagsAreClearErrors(t *testing.T) {
	t.Parallel()
	u := []string{"--url", "http://127.0.0.1:1/hubs/chat"}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined: -nope"},
		{"no url", nil, "--url: give at least one hub URL"},
		{"bad scheme", []string{"--url", "ftp://x/hubs/chat"}, "scheme must be http, https, ws or wss"},
		{"no host", []string{"--url", "http:///hubs/chat"}, "no host"},
		{"bad mode", append([]string{"--mode", "burst"}, u...), `--mode "burst": use fanout, idle or faults`},
		{"zero clients", append([]string{"--clients", "0"}, u...), "--clients must be at least 1"},
		{"more groups than clients", append([]string{"--clients", "10", "--groups", "11"}, u...), "--groups must be between 1 and --clients (10)"},
		{"bad rate", append([]string{"--rates", "1000,fast"}, u...), `--rates "fast"`},
		{"negative rate", append([]string{"--rates", "-5"}, u...), `--rates "-5"`},
		{"zero duration", append([]string{"--duration", "0s"}, u...), "--duration must be positive"},
		{"negative warmup", append([]string{"--warmup", "-1s"}, u...), "--warmup must not be negative"},
		{"bad pid", append([]string{"--pids", "12,abc"}, u...), `--pids "abc": want positive process ids`},
		{"bad redis pid", append([]string{"--redis-pids", "0"}, u...), `--redis-pids "0"`},
		{"zero connect rate", append([]string{"--connect-rate", "0"}, u...), "--connect-rate must be positive"},
		{"bad local addr", append([]string{"--local-addrs", "localhost"}, u...), `--local-addrs "localhost": not an IP address`},
		{"quick idle", []string{"--quick", "--mode", "idle"}, "--quick runs the fanout mode"},
		{"extra argument", append([]string{"go"}, u...), `unexpected argument "go"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			err := run(context.Background(), tc.args, io.Discard, &stderr)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("run(%v) = %v, want a usage error", tc.args, err)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not say %q", stderr.String(), tc.want)
			}
		})
	}
}

func TestFlagDefaults(t *testing.T) {
	t.Parallel()
	o, err := parseOptions([]string{"--url", "http://a/hubs/chat,ws://b/hubs/chat", "--url", "http://c/hubs/chat", "--pids", "1, 2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.urls) != 3 || o.clients != 2000 || o.groups != 200 || o.mode != "fanout" || o.warmup != 5*time.Second ||
		o.duration != 10*time.Second || len(o.rates) != 3 || o.rates[2] != 10000 || len(o.pids) != 2 || o.pids[1] != 2 || o.seed != 1 || !o.progress {
		t.Fatalf("defaults: %+v", o)
	}
	q, err := parseOptions([]string{"--quick", "--groups", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if q.clients != quickClients || q.groups != 5 || len(q.rates) != 1 || q.rates[0] != quickRate || q.duration != quickDuration || q.warmup != quickWarmup {
		t.Fatalf("quick: %+v; quick defaults apply, given flags win", q)
	}
}

// startTestCluster starts n hub nodes sharing one in-memory bus, each
// behind an httptest server, and returns their hub URLs.
func startTestCluster(t *testing.T, n int) []string {
	t.Helper()
	bus := backplane.NewMemoryBus()
	var urls []string
	for i := range n {
		node, err := hub.New(hub.Config{NodeID: "t" + strconv.Itoa(i), Backplane: bus.NewBackplane(), TokenSecret: []byte("test")})
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Register("relay", quickHub{}); err != nil {
			t.Fatal(err)
		}
		if err := node.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle("/hubs/", node.Handler())
		srv := httptest.NewServer(mux)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := node.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			srv.Close()
		})
		urls = append(urls, srv.URL+"/hubs/relay")
	}
	return urls
}

func readReport(t *testing.T, path string) report {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("JSON output: %v\n%s", err, data)
	}
	return r
}

// TestQuickSelfHosted runs --quick exactly as the test command does: two
// in-process nodes, zero loss, duplicates and reorders.
func TestQuickSelfHosted(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	args := []string{"--quick", "--json", filepath.Join(dir, "r.json"), "--markdown", filepath.Join(dir, "r.md")}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("quick: %v\nstderr:\n%s", err, stderr.String())
	}
	r := readReport(t, filepath.Join(dir, "r.json"))
	if len(r.Steps) != 1 {
		t.Fatalf("steps: %+v", r.Steps)
	}
	s := r.Steps[0]
	if s.SentMsgs == 0 || s.ExpectedDeliveries != s.SentMsgs*quickClients/quickGroups || s.LostDeliveries != 0 || s.Duplicates != 0 || s.Reorders != 0 || s.LatencyP99Ms <= 0 {
		t.Fatalf("step: %+v", s)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "r.md"))
	if !strings.Contains(stdout.String(), "| rate/s |") || string(md) != stdout.String() {
		t.Fatalf("markdown: stdout %q, file %q", stdout.String(), md)
	}
	if !strings.Contains(stderr.String(), "quick: ok") {
		t.Fatalf("stderr: %s", stderr.String())
	}
}

// TestFanoutAcrossTwoNodes runs two rates against external nodes with
// negotiate, measuring this process as "the node".
func TestFanoutAcrossTwoNodes(t *testing.T) {
	urls := startTestCluster(t, 2)
	path := filepath.Join(t.TempDir(), "r.json")
	var stdout, stderr bytes.Buffer
	args := []string{"--quick", "--url", strings.Join(urls, ","), "--clients", "30", "--groups", "3", "--rates", "100,300",
		"--warmup", "200ms", "--duration", "1s", "--negotiate", "--pids", strconv.Itoa(os.Getpid()), "--json", path, "--progress=false"}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	r := readReport(t, path)
	if len(r.Steps) != 2 {
		t.Fatalf("want 2 steps, got %d", len(r.Steps))
	}
	for _, s := range r.Steps {
		if s.LostDeliveries != 0 || s.Duplicates != 0 || s.Reorders != 0 || s.WindowDeliveries == 0 || s.NodeCPUS <= 0 || len(s.NodeRSSBytes) != 1 {
			t.Fatalf("step: %+v", s)
		}
		if want := s.TargetRatePerS; s.OfferedPerS < 0.8*want || s.OfferedPerS > 1.2*want {
			t.Errorf("offered %.0f/s for a target of %.0f/s", s.OfferedPerS, want)
		}
	}
	if strings.Contains(stderr.String(), "\r") {
		t.Error("--progress=false still wrote a progress line")
	}
}

// TestFastPathMatchesServer checks that hubfabric writes group messages the
// way the receivers' fast path expects.
func TestFastPathMatchesServer(t *testing.T) {
	urls := startTestCluster(t, 1)
	o, err := parseOptions([]string{"--url", urls[0], "--clients", "4", "--groups", "1", "--rates", "50", "--warmup", "0s", "--duration", "300ms", "--progress=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(o, urls, 2)
	defer f.close()
	steps, _, err := runFanoutOn(context.Background(), o, f, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if steps[0].UniqueDeliveries == 0 || f.w.slowPath.Load() != 0 {
		t.Fatalf("unique %d, slow-path messages %d: the fast path missed hubfabric's format", steps[0].UniqueDeliveries, f.w.slowPath.Load())
	}
}

func TestIdleMode(t *testing.T) {
	urls := startTestCluster(t, 2)
	path := filepath.Join(t.TempDir(), "r.json")
	var stdout, stderr bytes.Buffer
	pid := strconv.Itoa(os.Getpid())
	args := []string{"--mode", "idle", "--url", strings.Join(urls, ","), "--clients", "50", "--warmup", "100ms", "--duration", "200ms",
		"--pids", pid + "," + pid, "--json", path, "--ping-interval", "50ms", "--progress=false"}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	r := readReport(t, path)
	if r.Idle == nil || r.Idle.Connections != 50 || r.Idle.ConnectErrors != 0 || r.Idle.Disconnects != 0 || len(r.Idle.Nodes) != 2 ||
		r.Idle.Nodes[0].Connections != 25 || r.Idle.Nodes[1].URL != urls[1] {
		t.Fatalf("idle: %+v", r.Idle)
	}
	if !strings.Contains(stdout.String(), "KiB per connection") {
		t.Fatalf("markdown: %s", stdout.String())
	}
}

func TestConnectFailureIsClear(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--url", srv.URL + "/hubs/chat", "--clients", "2", "--groups", "1", "--progress=false"}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("run = %v, want a connect error naming HTTP 404", err)
	}
}
