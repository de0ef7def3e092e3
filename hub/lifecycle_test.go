package hub_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
)

// stalledBackplane is a Memory whose first Subscribe (the node channels
// Start subscribes) waits until release is closed, like a Redis that does
// not answer yet.
type stalledBackplane struct {
	*backplane.Memory
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *stalledBackplane) Subscribe(ctx context.Context, channels ...string) error {
	first := false
	b.once.Do(func() { first = true })
	if first {
		close(b.entered)
		<-b.release
	}
	return b.Memory.Subscribe(ctx, channels...)
}

// TestShutdownDuringStart: while Start waits for the backplane, the node
// answers at once (not ready, hubs not started), and a Shutdown then waits
// for Start to give up before stopping the actors; Start returns
// ErrNodeClosed and nothing hands out a hub actor that was never started.
func TestShutdownDuringStart(t *testing.T) {
	bp := &stalledBackplane{Memory: backplane.NewMemory(), entered: make(chan struct{}), release: make(chan struct{})}
	n, err := hub.New(hub.Config{Backplane: bp})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Register("room", &roomHub{}); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- n.Start(context.Background()) }()
	<-bp.entered
	if ok, why := n.Ready(); ok || why != "starting: waiting for the backplane" {
		t.Fatalf("Ready while Start waits = %v %q", ok, why)
	}
	if pid, err := n.HubPID("room"); pid != nil || !errors.Is(err, hub.ErrNotStarted) {
		t.Fatalf("HubPID while Start waits = %v, %v; want ErrNotStarted", pid, err)
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- n.Shutdown(ctx)
	}()
	// Shutdown has begun (it sets the state first, then waits for Start);
	// from then on no hub may be handed out.
	deadline := time.Now().Add(10 * time.Second)
	for ok, why := n.Ready(); why != "shutting down"; ok, why = n.Ready() {
		if ok || time.Now().After(deadline) {
			t.Fatalf("Ready = %v %q, want shutting down", ok, why)
		}
		runtime.Gosched()
	}
	for range 100 {
		if pid, err := n.HubPID("room"); pid != nil || err == nil {
			t.Fatalf("HubPID during Shutdown of a starting node = %v, %v", pid, err)
		}
		if _, err := n.HubContext("room"); err == nil {
			t.Fatal("HubContext during Shutdown of a starting node succeeded")
		}
	}
	close(bp.release)
	if err := <-started; !errors.Is(err, hub.ErrNodeClosed) {
		t.Fatalf("Start = %v, want ErrNodeClosed", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if ok, why := n.Ready(); ok || why != "shutting down" {
		t.Fatalf("Ready after Shutdown = %v %q", ok, why)
	}
}

// refusingBackplane is a Memory whose Start fails, as a Redis backplane
// with abortConnect=true does when Redis is unreachable.
type refusingBackplane struct{ *backplane.Memory }

func (refusingBackplane) Start(context.Context, backplane.Handler) error {
	return errors.New("refused to start")
}

// TestFailedStart: a Start that fails leaves a node that says so, refuses a
// second Start, and shuts down cleanly.
func TestFailedStart(t *testing.T) {
	bp := refusingBackplane{backplane.NewMemory()}
	n, err := hub.New(hub.Config{Backplane: bp})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Register("room", &roomHub{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil {
		t.Fatal("Start on a backplane that refuses to start succeeded")
	}
	if ok, why := n.Ready(); ok || why != "start failed" {
		t.Fatalf("Ready after a failed Start = %v %q", ok, why)
	}
	if err := n.Start(context.Background()); err == nil {
		t.Fatal("a second Start after a failed one succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after a failed Start = %v", err)
	}
}
