package actorreg

import (
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// TestCompactKeepsWhatWasRegistered: after Compact the registry has
// Buckets buckets, every process registered before (the event stream, dead
// letters) is found under its id, and actors spawned afterwards are
// registered, reached and removed as usual.
func TestCompactKeepsWhatWasRegistered(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer sys.Shutdown()
	before := map[string]actor.Process{}
	for _, bucket := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		bucket.IterCb(func(id string, p any) { before[id] = p.(actor.Process) })
	}
	if len(before) == 0 {
		t.Fatal("a new actor system has no registered process to carry over")
	}
	Compact(sys)
	if got := len(sys.ProcessRegistry.LocalPIDs.LocalPIDs); got != Buckets {
		t.Fatalf("%d buckets, want %d", got, Buckets)
	}
	for id, p := range before {
		if got, ok := sys.ProcessRegistry.GetLocal(id); !ok || got != p {
			t.Errorf("process %q lost by Compact", id)
		}
	}
	echo := actor.PropsFromFunc(func(c actor.Context) {
		if s, ok := c.Message().(string); ok {
			c.Respond(s)
		}
	})
	var pids []*actor.PID
	for range 100 {
		pids = append(pids, sys.Root.Spawn(echo))
	}
	for _, pid := range pids {
		res, err := sys.Root.RequestFuture(pid, pid.Id, 5*time.Second).Result()
		if err != nil || res != pid.Id {
			t.Fatalf("%s answered %v, %v", pid.Id, res, err)
		}
	}
	for _, pid := range pids {
		if err := sys.Root.StopFuture(pid).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, ok := sys.ProcessRegistry.GetLocal(pid.Id); ok {
			t.Errorf("%s still registered after it stopped", pid.Id)
		}
	}
}
