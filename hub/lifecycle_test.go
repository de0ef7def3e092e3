package hub_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
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

// deafBackplane is a Memory whose subscriptions for connections hang,
// ignoring their context, until release is closed: a backplane that never
// answers.
type deafBackplane struct {
	*backplane.Memory
	release chan struct{}
}

func (b *deafBackplane) Subscribe(ctx context.Context, channels ...string) error {
	for _, c := range channels {
		if strings.Contains(c, ":c:") {
			<-b.release
		}
	}
	return b.Memory.Subscribe(ctx, channels...)
}

// disconnects records OnDisconnected calls.
type disconnects struct{ ids chan string }

func (d disconnects) OnDisconnected(c *hub.Context, _ error) { d.ids <- c.ConnectionID }

// Ping answers "pong".
func (disconnects) Ping(*hub.Context) string { return "pong" }

// TestConnectNotAttachedInTime: when the hub cannot attach a connection in
// time (its backplane does not answer), the client is refused with a plain
// reason, and the connection the hub attached meanwhile is ended: its
// OnDisconnected runs and Shutdown finds no connection left.
func TestConnectNotAttachedInTime(t *testing.T) {
	bp := &deafBackplane{Memory: backplane.NewMemory(), release: make(chan struct{})}
	d := disconnects{ids: make(chan string, 1)}
	tn := startNode(t, hub.Config{Backplane: bp, BackplaneTimeout: time.Millisecond}, map[string]any{"room": d})
	c, _, err := dialRaw(t, tn.url, "room", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.writeText(string(protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: "json", Version: 1})))
	resp := c.handshakeResponse() // after BackplaneTimeout + 5 s
	if !strings.Contains(resp.Error, "did not attach the connection in time") || strings.Contains(resp.Error, "future") {
		t.Fatalf("handshake answer %q, want a plain refusal", resp.Error)
	}
	close(bp.release) // the hub's subscription completes, too late
	select {
	case <-d.ids:
	case <-time.After(10 * time.Second):
		t.Fatal("the abandoned connection's OnDisconnected did not run")
	}
}
