package faultload_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubfabric/hubfabric/internal/faultload"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// protoactor's dead-letter throttle outlives an actor system by design.
var protoactorThrottle = goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, protoactorThrottle) }

// TestFaultsUnderLoad runs fan-out between two nodes through each fault
// and requires that no owed delivery of a send reported as successful is
// missing, with or without a gap, and that nothing is duplicated. Without
// the presence count of the Redis backplane, sends accepted after a Redis
// restart but before the other node resubscribed are missing there (a
// gap only), and the restart case fails.
func TestFaultsUnderLoad(t *testing.T) {
	const seed = 7
	for _, f := range faultload.Faults {
		t.Run(string(f), func(t *testing.T) {
			srv := redistest.StartStandalone(t)
			res, err := faultload.Run(t.Context(), faultload.Config{
				Redis: faultload.Server(srv), Rate: 200, Before: time.Second, After: 3 * time.Second,
				Pause: 3 * time.Second, Seed: seed,
			}, f)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			t.Logf("%+v", res)
			if res.LostSilently != 0 || res.LostGap != 0 || res.Duplicates != 0 {
				t.Errorf("seed %d: %s: lost silently %d, lost with a gap %d, duplicated %d; want 0",
					seed, f, res.LostSilently, res.LostGap, res.Duplicates)
			}
			if res.Recovery < 0 {
				t.Errorf("seed %d: %s: no send after the repair reached every member", seed, f)
			}
			if res.Delivered == 0 {
				t.Errorf("seed %d: %s: nothing delivered", seed, f)
			}
			if f == faultload.RedisPause && res.FailedLoudly == 0 {
				t.Errorf("seed %d: sends during a %v pause did not fail", seed, 3*time.Second)
			}
		})
	}
}
