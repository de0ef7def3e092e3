package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
)

// chaosHub adds WhoAmI to the fanout methods: chaos clients learn their
// connection id with it.
type chaosHub struct{ quickHub }

// WhoAmI returns the caller's connection id as cmd/node's relay does.
func (chaosHub) WhoAmI(c *hub.Context) (map[string]string, error) {
	return map[string]string{"connectionId": c.ConnectionID}, nil
}

// slowCloses turns the node's "closing slow client" log records into one
// event per connection id.
type slowCloses struct {
	mu    sync.Mutex
	chans map[string]chan struct{}
	fired map[string]bool
}

func (s *slowCloses) ch(id string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.chans[id]
	if !ok {
		c = make(chan struct{})
		s.chans[id] = c
	}
	return c
}

func (s *slowCloses) fire(id string) {
	c := s.ch(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fired[id] {
		s.fired[id] = true
		close(c)
	}
}

// slowCloseHandler is a slog.Handler that reports slow-client closes to
// s; it keeps the attributes given by WithAttrs to find conn_id.
type slowCloseHandler struct {
	s     *slowCloses
	attrs []slog.Attr
}

func (h slowCloseHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h slowCloseHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "closing slow client" {
		return nil
	}
	id := ""
	for _, a := range h.attrs {
		if a.Key == "conn_id" {
			id = a.Value.String()
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "conn_id" {
			id = a.Value.String()
		}
		return true
	})
	if id != "" {
		h.s.fire(id)
	}
	return nil
}

func (h slowCloseHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return slowCloseHandler{s: h.s, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h slowCloseHandler) WithGroup(string) slog.Handler { return h }

// TestChaosSmall is the chaos mode at 100 clients on an in-process node
// with a 64 KiB outbound bound: 10 non-readers (half resume reading when
// the node logs that it closes them, and must find the Close message
// naming the bound; half never read and must see their socket closed),
// 10 droppers reconnecting over and over, and 80 measuring clients that
// must get every message. The process's goroutines must come back to
// their count before the chaos phase. Throughput is not compared here.
func TestChaosSmall(t *testing.T) {
	const maxOutbound = 64 << 10
	closes := &slowCloses{chans: map[string]chan struct{}{}, fired: map[string]bool{}}
	node, err := hub.New(hub.Config{NodeID: "chaos", TokenSecret: []byte("test"), MaxOutboundBytes: maxOutbound,
		Logger: slog.New(slowCloseHandler{s: closes})})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Register("relay", chaosHub{}); err != nil {
		t.Fatal(err)
	}
	if err := node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", node.Handler())
	srv := httptest.NewServer(mux)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := node.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		srv.Close()
	}()

	o, err := parseOptions([]string{"--mode", "chaos", "--url", srv.URL + "/hubs/relay", "--clients", "100", "--groups", "8",
		"--rates", "200", "--rounds", "1", "--warmup", "200ms", "--duration", "1s", "--max-outbound-bytes", strconv.Itoa(maxOutbound),
		"--flood-rate", "100", "--flood-bytes", "8192", "--close-timeout", "30s", "--pids", strconv.Itoa(os.Getpid()), "--progress=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.chaos.nonReaders != 10 || o.chaos.droppers != 10 {
		t.Fatalf("defaults: %d non-readers, %d droppers; want 10%% of --clients each", o.chaos.nonReaders, o.chaos.droppers)
	}
	var hooked atomic.Int64
	o.chaos.closing = func(id string) <-chan struct{} {
		if hooked.Add(1)%2 == 0 {
			return nil // this one never reads
		}
		return closes.ch(id)
	}
	o.chaos.goroutines = func(context.Context) ([]int, error) { return []int{runtime.NumGoroutine()}, nil }
	o.chaos.noThroughputBound = true
	var stderr strings.Builder
	res, err := runChaos(context.Background(), o, o.urls, nil, &stderr)
	if err != nil {
		t.Fatalf("chaos: %v\nstderr:\n%s", err, stderr.String())
	}
	if len(res.Phases) != 2 || res.Phases[0].Chaos || !res.Phases[1].Chaos {
		t.Fatalf("phases: %+v", res.Phases)
	}
	for _, p := range res.Phases {
		s := p.Fanout
		if s.SentMsgs == 0 || s.LostDeliveries != 0 || s.WarmupLostDeliveries != 0 || s.Duplicates != 0 || s.DisconnectsSoFar != 0 {
			t.Errorf("%s: sent %d, lost %d (+%d in the warm-up), dups %d, disconnects %d (%s)", p.Name, s.SentMsgs, s.LostDeliveries,
				s.WarmupLostDeliveries, s.Duplicates, s.DisconnectsSoFar, s.firstDisconnect)
		}
		if !p.GoroutinesBack {
			t.Errorf("%s: goroutines %v, before %v", p.Name, p.NodeGoroutinesAfter, res.BaselineGoroutines)
		}
	}
	c := res.Phases[1]
	if c.NonReadersClosed < 10 || c.NonReadersNotClosed != 0 || c.CloseMessagesSeen < 5 || c.Drops == 0 || c.ChaosErrors != 0 {
		t.Fatalf("chaos phase: %d non-readers closed, %d left open, %d Close messages seen (want >= 5), %d drops, %d errors (first: %s)",
			c.NonReadersClosed, c.NonReadersNotClosed, c.CloseMessagesSeen, c.Drops, c.ChaosErrors, c.FirstChaosError)
	}
	md := chaosMarkdown(res)
	if !strings.Contains(md, "| chaos 1 |") || !strings.Contains(md, "median delivered/s") {
		t.Fatalf("markdown:\n%s", md)
	}
	t.Logf("\n%s", md)
}

func TestParseGoroutineTotal(t *testing.T) {
	t.Parallel()
	if n, err := parseGoroutineTotal("goroutine profile: total 1234\n"); err != nil || n != 1234 {
		t.Fatalf("= %d, %v", n, err)
	}
	for _, bad := range []string{"", "goroutine profile: total x", "heap profile: 1"} {
		if _, err := parseGoroutineTotal(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
