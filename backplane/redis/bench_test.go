package redisbp_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// countingHandler counts deliveries and signals when want arrived.
type countingHandler struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (h *countingHandler) HandleMessage(string, []byte) {
	if h.n.Add(1) == h.want {
		close(h.done)
	}
}

func (h *countingHandler) HandleEvent(backplane.Event) {}

// BenchmarkPublish publishes pipelined batches of 100 messages (100 bytes)
// through one Backplane to a subscribing one, and waits until the
// subscriber got them all; msg/s counts delivered messages. With
// REDIS_BENCHMARK=1 it first runs `redis-benchmark -P 16 -q -n 200000
// PUBLISH <channel> <100 bytes>` against the same server, for comparison in
// one run. (`redis-benchmark -t publish` prints nothing on Redis 7.0:
// publish is not one of its built-in tests.)
func BenchmarkPublish(b *testing.B) {
	srv := redistest.StartStandalone(b)
	payload := strings.Repeat("p", 100)
	if os.Getenv("REDIS_BENCHMARK") != "" {
		_, port, _ := strings.Cut(srv.Addr, ":")
		args := []string{"-p", port, "-P", "16", "-q", "-n", "200000", "PUBLISH", "bench-nosub", payload}
		out, err := exec.Command("redis-benchmark", args...).CombinedOutput()
		if err != nil {
			b.Fatalf("redis-benchmark: %v\n%s", err, out)
		}
		b.Logf("redis-benchmark -P 16 -q -n 200000 PUBLISH (100 bytes, no subscriber): %s", lastLine(string(out)))
		// The same with one subscriber draining the channel, as in the
		// Backplane benchmark below.
		sub := exec.Command("redis-cli", "-p", port, "subscribe", "bench-sub")
		sub.Stdout = io.Discard
		if err := sub.Start(); err != nil {
			b.Fatalf("redis-cli subscribe: %v", err)
		}
		defer func() { _ = sub.Process.Kill(); _ = sub.Wait() }()
		if err := waitSubscribers(srv.Addr, "bench-sub"); err != nil {
			b.Fatal(err)
		}
		args[len(args)-2] = "bench-sub"
		out, err = exec.Command("redis-benchmark", args...).CombinedOutput()
		if err != nil {
			b.Fatalf("redis-benchmark: %v\n%s", err, out)
		}
		b.Logf("redis-benchmark -P 16 -q -n 200000 PUBLISH (100 bytes, one redis-cli subscriber): %s", lastLine(string(out)))
	}
	for _, mode := range []redisbp.Sharding{redisbp.ShardedOn, redisbp.ShardedOff} {
		b.Run("sharded="+mode.String(), func(b *testing.B) {
			opts := redisbp.Options{Addrs: []string{srv.Addr}, ChannelPrefix: uniquePrefix(b), Sharded: mode}
			pub, _ := newBackplane(b, opts, nil)
			sub, _ := newBackplane(b, opts, nil)
			const batchSize = 100
			h := &countingHandler{want: int64(b.N) * batchSize, done: make(chan struct{})}
			ctx := b.Context()
			if err := sub.Start(ctx, h); err != nil {
				b.Fatal(err)
			}
			if err := pub.Start(ctx, &countingHandler{done: make(chan struct{})}); err != nil {
				b.Fatal(err)
			}
			const c = "bench"
			if err := sub.Subscribe(ctx, c); err != nil {
				b.Fatal(err)
			}
			batch := make([]backplane.Message, batchSize)
			for i := range batch {
				batch[i] = backplane.Message{Channel: c, Payload: []byte(payload)}
			}
			b.ResetTimer()
			for range b.N {
				if err := pub.Publish(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			<-h.done
			b.StopTimer()
			b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "msg/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "\r", "\n"))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// waitSubscribers waits (bounded) until channel has a subscriber.
func waitSubscribers(addr, channel string) error {
	for range 200 {
		out, err := redistest.Do(addr, "PUBSUB", "NUMSUB", channel)
		if err == nil && strings.HasSuffix(out, "\n1") {
			return nil
		}
		time.Sleep(10 * time.Millisecond) // polls an external process
	}
	return fmt.Errorf("no subscriber on %s", channel)
}
