package redisbp_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

func msg(channel, payload string) []backplane.Message {
	return []backplane.Message{{Channel: channel, Payload: []byte(payload)}}
}

// TestRedisStoppedMidTraffic stops Redis while a publisher runs, restarts it
// on the same port, and checks the outage is loud and delivery resumes.
func TestRedisStoppedMidTraffic(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		stop func(*redistest.Server)
		mode redisbp.Sharding
	}{
		{"SIGTERM/sharded", (*redistest.Server).Stop, redisbp.ShardedOn},
		{"SIGKILL/sharded", (*redistest.Server).Kill, redisbp.ShardedOn},
		{"SIGKILL/classic", (*redistest.Server).Kill, redisbp.ShardedOff},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.StartStandalone(t)
			bp, _ := newBackplane(t, redisbp.Options{
				Addrs:          []string{srv.Addr},
				Sharded:        tt.mode,
				ProbeInterval:  200 * time.Millisecond,
				PublishTimeout: time.Second,
			}, nil)
			h := newHandler()
			ctx := t.Context()
			if err := bp.Start(ctx, h); err != nil {
				t.Fatal(err)
			}
			const c = "traffic"
			if err := bp.Subscribe(ctx, c); err != nil {
				t.Fatal(err)
			}

			// The publisher paces itself so the race detector keeps up; it
			// records when its first publish failed.
			var (
				mu        sync.Mutex
				seq       int
				firstFail time.Time
				failErr   error
			)
			stopPub := make(chan struct{})
			pubDone := make(chan struct{})
			failed := make(chan struct{}) // closed at the first failed publish
			go func() {
				defer close(pubDone)
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stopPub:
						return
					case <-tick.C:
					}
					mu.Lock()
					seq++
					n := seq
					mu.Unlock()
					err := bp.Publish(ctx, msg(c, strconv.Itoa(n)))
					if err != nil {
						mu.Lock()
						if firstFail.IsZero() {
							firstFail, failErr = time.Now(), err
							close(failed)
						}
						mu.Unlock()
					}
				}
			}()
			defer func() { close(stopPub); <-pubDone }()
			h.waitUntil(t, "traffic before the outage", func() bool { return len(h.payloads(c)) >= 10 })

			stoppedAt := time.Now()
			tt.stop(srv)
			h.waitKind(t, backplane.EventDown, 1)
			downAfter := time.Since(stoppedAt)
			select {
			case <-failed:
			case <-time.After(waitLimit):
				t.Fatalf("no publish failed within %v of stopping Redis", waitLimit)
			}
			mu.Lock()
			failAfter, ferr := firstFail.Sub(stoppedAt), failErr
			mu.Unlock()
			if !errors.Is(ferr, backplane.ErrUnavailable) || !strings.Contains(ferr.Error(), "redis backplane: publish") {
				t.Errorf("publish during the outage failed with %v, want ErrUnavailable naming the redis backplane", ferr)
			}
			t.Logf("stop -> first publish error: %v; stop -> EventDown: %v", failAfter, downAfter)

			restartedAt := time.Now()
			srv.Restart(t)
			mu.Lock()
			seqAtRestart := seq
			mu.Unlock()
			h.waitUntil(t, "a message published after the restart", func() bool {
				for _, p := range h.payloads(c) {
					if n, _ := strconv.Atoi(p); n > seqAtRestart {
						return true
					}
				}
				return false
			})
			firstDelivery := time.Since(restartedAt)
			h.waitKind(t, backplane.EventRestored, 1)
			t.Logf("restart -> first delivered message: %v; restart -> EventRestored: %v", firstDelivery, time.Since(restartedAt))

			kinds := h.kinds()
			want := []backplane.EventKind{backplane.EventDown, backplane.EventGap, backplane.EventRestored}
			if !slices.Equal(kinds[:min(3, len(kinds))], want) {
				t.Errorf("events %v, want %v first", kinds, want)
			}
			if gaps := h.eventsOf(backplane.EventGap); len(gaps) == 0 || !slices.Contains(gaps[0].Channels, c) {
				t.Errorf("EventGap %+v does not name %q", gaps, c)
			}
			if st := bp.Stats(); st.Gaps == 0 || st.PublishErrors == 0 || st.Reconnects == 0 {
				t.Errorf("Stats %+v: want gaps, publish errors and reconnects counted", st)
			}
			// No duplicates: every sequence number at most once, in order.
			last := 0
			for _, p := range h.payloads(c) {
				n, _ := strconv.Atoi(p)
				if n <= last {
					t.Fatalf("message %d after %d: duplicate or out of order", n, last)
				}
				last = n
			}
		})
	}
}

// TestStartWhileRedisDown starts a backplane with Redis down: with
// AbortConnect false it starts, Subscribe fails with ErrUnavailable but the
// subscription is made once Redis is up; with AbortConnect true, Start fails.
func TestStartWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.StartStandalone(t)
	srv.Stop()
	ctx := t.Context()

	t.Run("AbortConnect", func(t *testing.T) {
		bp, _ := newBackplane(t, redisbp.Options{
			Addrs: []string{srv.Addr}, AbortConnect: true, ConnectTimeout: 500 * time.Millisecond,
		}, nil)
		err := bp.Start(ctx, newHandler())
		if !errors.Is(err, backplane.ErrUnavailable) || !strings.Contains(err.Error(), "abortConnect=true") ||
			!strings.Contains(err.Error(), srv.Addr) {
			t.Fatalf("Start with Redis down and AbortConnect = %v, want ErrUnavailable naming the address and abortConnect", err)
		}
	})

	t.Run("NoAbortConnect", func(t *testing.T) {
		opts, err := redisbp.ParseConnectionString(srv.Addr + ",abortConnect=false,connectTimeout=500")
		if err != nil {
			t.Fatal(err)
		}
		opts.ProbeInterval = 100 * time.Millisecond
		bp, _ := newBackplane(t, opts, nil)
		h := newHandler()
		if err := bp.Start(ctx, h); err != nil {
			t.Fatalf("Start with Redis down and abortConnect=false: %v", err)
		}
		const c = "late"
		if err := bp.Subscribe(ctx, c); !errors.Is(err, backplane.ErrUnavailable) {
			t.Fatalf("Subscribe with Redis down = %v, want ErrUnavailable", err)
		}
		if err := bp.Publish(ctx, msg(c, "lost")); !errors.Is(err, backplane.ErrUnavailable) {
			t.Fatalf("Publish with Redis down = %v, want ErrUnavailable", err)
		}
		h.waitKind(t, backplane.EventDown, 1)

		srv.Restart(t)
		h.waitKind(t, backplane.EventRestored, 1)
		// Restored means every subscription is in effect: no Subscribe needed.
		if err := bp.Publish(ctx, msg(c, "hello")); err != nil {
			t.Fatal(err)
		}
		h.waitPayload(t, c, "hello")
		if got := h.payloads(c); !slices.Equal(got, []string{"hello"}) {
			t.Errorf("got %q, want [hello]", got)
		}
	})
}

// TestSlowSubscriberEvicted blocks a Handler while a publisher floods its
// channel: Redis disconnects the subscriber at its pubsub output buffer
// limit, go-redis reconnects silently, and the backplane reports the gap.
func TestSlowSubscriberEvicted(t *testing.T) {
	t.Parallel()
	srv := redistest.StartStandalone(t, "--client-output-buffer-limit", "pubsub 64kb 32kb 1")
	prefix := uniquePrefix(t)
	opts := redisbp.Options{Addrs: []string{srv.Addr}, ChannelPrefix: prefix, ProbeInterval: 100 * time.Millisecond}
	sub, _ := newBackplane(t, opts, nil)
	pub, _ := newBackplane(t, opts, nil)
	ctx := t.Context()
	slow := newHandler()
	slow.block, slow.blocked = make(chan struct{}), make(chan struct{})
	unblock := sync.OnceFunc(func() { close(slow.block) })
	t.Cleanup(unblock)
	if err := sub.Start(ctx, slow); err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx, newHandler()); err != nil {
		t.Fatal(err)
	}
	const c = "flood"
	if err := sub.Subscribe(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, msg(c, "first")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-slow.blocked:
	case <-time.After(waitLimit):
		t.Fatal("the handler never got the first message")
	}

	payload := strings.Repeat("x", 1024)
	batch := make([]backplane.Message, 100)
	for i := range batch {
		batch[i] = backplane.Message{Channel: c, Payload: []byte(payload)}
	}
	// 40 MB: far more than the socket buffers and the 4096 queued messages
	// hold, so Redis overruns its 64 kB pubsub limit and disconnects sub.
	for range 400 {
		if err := pub.Publish(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	unblock()
	slow.waitKind(t, backplane.EventGap, 1)
	slow.waitKind(t, backplane.EventRestored, 1)
	gap := slow.eventsOf(backplane.EventGap)[0]
	if !slices.Contains(gap.Channels, c) {
		t.Errorf("EventGap channels %q do not name %q", gap.Channels, c)
	}
	st := sub.Stats()
	if st.Gaps == 0 || st.Reconnects == 0 {
		t.Errorf("Stats %+v: want the gap and the reconnection counted", st)
	}
	t.Logf("delivered %d of %d messages to the slow subscriber; stats %+v", len(slow.payloads(c)), pub.Stats().Published, st)
	// Delivery works again.
	if err := pub.Publish(ctx, msg(c, "after")); err != nil {
		t.Fatal(err)
	}
	slow.waitPayload(t, c, "after")
}

// TestDeafSubscriptionReplaced makes the connections of a backplane drop
// everything they receive while staying open: go-redis notices nothing on
// the subscription connection, the probes stop coming back, and the
// backplane replaces the connection and reports the gap.
func TestDeafSubscriptionReplaced(t *testing.T) {
	t.Parallel()
	srv := redistest.StartStandalone(t)
	fn := newFaultNet()
	prefix := uniquePrefix(t)
	opts := redisbp.Options{
		Addrs: []string{srv.Addr}, ChannelPrefix: prefix,
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond, PublishTimeout: 300 * time.Millisecond,
	}
	sub, _ := newBackplane(t, opts, fn)
	pub, _ := newBackplane(t, opts, nil)
	h := newHandler()
	ctx := t.Context()
	if err := sub.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx, newHandler()); err != nil {
		t.Fatal(err)
	}
	const c = "deaf"
	if err := sub.Subscribe(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, msg(c, "before")); err != nil {
		t.Fatal(err)
	}
	h.waitPayload(t, c, "before")

	fn.Deafen()
	h.waitKind(t, backplane.EventGap, 1)
	h.waitKind(t, backplane.EventRestored, 1)
	if gap := h.eventsOf(backplane.EventGap)[0]; !slices.Contains(gap.Channels, c) {
		t.Errorf("EventGap channels %q do not name %q", gap.Channels, c)
	}
	if st := sub.Stats(); st.ProbesFailed == 0 {
		t.Errorf("Stats %+v: want the failed probe counted", st)
	}
	if err := pub.Publish(ctx, msg(c, "after")); err != nil {
		t.Fatal(err)
	}
	h.waitPayload(t, c, "after")
	t.Logf("events %v, stats %+v", h.kinds(), sub.Stats())
}

// TestSentinelConnectionString connects through a sentinel named in a
// connection string, with a backplane that owns its client.
func TestSentinelConnectionString(t *testing.T) {
	t.Parallel()
	sentinel, _ := redistest.StartSentinel(t, "mymaster")
	bp, err := redisbp.NewFromString(sentinel.Addr+",serviceName=mymaster,abortConnect=true,channelPrefix="+uniquePrefix(t),
		func(o *redisbp.Options) { o.ProbeInterval = 100 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bp.Close() }) // closes the client it owns; goleak checks
	h := newHandler()
	ctx := t.Context()
	if err := bp.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := bp.Subscribe(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if err := bp.Publish(ctx, msg("s", "via sentinel")); err != nil {
		t.Fatal(err)
	}
	h.waitPayload(t, "s", "via sentinel")
}
