package hub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	redisbp "github.com/hubfabric/hubfabric/backplane/redis"

	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

func TestMain(m *testing.M) {
	// go-redis logs dial failures of the outage tests on stderr otherwise.
	redisbp.RouteLibraryLogs(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m, protoactorThrottle)
}

// roomHub exercises every part of the hub API.
type roomHub struct {
	mu           sync.Mutex
	connected    []string
	disconnected []string
	order        []int
}

type point struct {
	X int    `json:"x"`
	Y int    `json:"y"`
	L string `json:"label"`
}

func (h *roomHub) OnConnected(c *hub.Context) error {
	h.mu.Lock()
	h.connected = append(h.connected, c.ConnectionID)
	h.mu.Unlock()
	return nil
}

func (h *roomHub) OnDisconnected(c *hub.Context, err error) {
	h.mu.Lock()
	h.disconnected = append(h.disconnected, c.ConnectionID)
	h.mu.Unlock()
}

func (*roomHub) Add(_ *hub.Context, a, b int) (int, error) { return a + b, nil }
func (*roomHub) Mirror(_ *hub.Context, p point) (point, error) {
	return point{X: p.Y, Y: p.X, L: p.L}, nil
}
func (*roomHub) Nothing(_ *hub.Context) error            { return nil }
func (*roomHub) Oops(_ *hub.Context) error               { return errors.New("secret database detail") }
func (*roomHub) Refuse(_ *hub.Context, why string) error { return hub.Errorf("refused: %s", why) }
func (*roomHub) Panic(_ *hub.Context) error              { panic("boom") }
func (*roomHub) Whoami(c *hub.Context) (string, error)   { return c.ConnectionID, nil }
func (*roomHub) Join(c *hub.Context, g string) error     { return c.Groups.Add(c, c.ConnectionID, g) }
func (*roomHub) Leave(c *hub.Context, g string) error    { return c.Groups.Remove(c, c.ConnectionID, g) }
func (*roomHub) ToAll(c *hub.Context, s string) error {
	return c.Clients.All().Send(c, "got", "all", s)
}
func (*roomHub) ToOthers(c *hub.Context, s string) error {
	return c.Clients.Others().Send(c, "got", "others", s)
}
func (*roomHub) ToCaller(c *hub.Context, s string) error {
	return c.Clients.Caller().Send(c, "got", "caller", s)
}
func (*roomHub) ToGroup(c *hub.Context, g, s string) error {
	return c.Clients.Group(g).Send(c, "got", "group", s)
}
func (*roomHub) ToOthersInGroup(c *hub.Context, g, s string) error {
	return c.Clients.OthersInGroup(g).Send(c, "got", "othersInGroup", s)
}
func (*roomHub) ToGroups(c *hub.Context, gs []string, s string) error {
	return c.Clients.Groups(gs...).Send(c, "got", "groups", s)
}
func (*roomHub) ToClient(c *hub.Context, id, s string) error {
	return c.Clients.Client(id).Send(c, "got", "client", s)
}
func (*roomHub) ToClients(c *hub.Context, ids []string, s string) error {
	return c.Clients.Clients(ids...).Send(c, "got", "clients", s)
}
func (*roomHub) ToAllExcept(c *hub.Context, ids []string, s string) error {
	return c.Clients.AllExcept(ids...).Send(c, "got", "allExcept", s)
}
func (*roomHub) ToGroupExcept(c *hub.Context, g string, ids []string, s string) error {
	return c.Clients.GroupExcept(g, ids...).Send(c, "got", "groupExcept", s)
}

// Record appends n to a list; with one invocation at a time the list is
// in arrival order.
func (h *roomHub) Record(_ *hub.Context, n int) error {
	h.mu.Lock()
	h.order = append(h.order, n)
	h.mu.Unlock()
	return nil
}

func (*roomHub) Count(c *hub.Context, n int) (<-chan int, error) {
	ch := make(chan int)
	go func() {
		defer close(ch)
		for i := 0; i < n; i++ {
			select {
			case ch <- i:
			case <-c.Done():
				return
			}
		}
	}()
	return ch, nil
}

// Forever streams until cancelled, then reports the cancellation on a
// channel the test reads.
func (*roomHub) Forever(c *hub.Context) (<-chan int, error) {
	ch := make(chan int)
	go func() {
		defer close(ch)
		for i := 0; ; i++ {
			select {
			case ch <- i:
			case <-c.Done():
				cancelled <- c.ConnectionID
				return
			}
		}
	}()
	return ch, nil
}

var cancelled = make(chan string, 16)

func (*roomHub) Total(_ *hub.Context, label string, xs <-chan int) (string, error) {
	sum := 0
	for x := range xs {
		sum += x
	}
	return fmt.Sprintf("%s=%d", label, sum), nil
}

var protocols = []string{"json", "messagepack"}

// received collects the "got" invocations of one client.
type received struct {
	mu   sync.Mutex
	msgs []string
	ch   chan string
}

func listen(c *client.Conn) *received {
	r := &received{ch: make(chan string, 1024)}
	c.On("got", func(route, s string) {
		r.mu.Lock()
		r.msgs = append(r.msgs, route+":"+s)
		r.mu.Unlock()
		r.ch <- route + ":" + s
	})
	return r
}

// expect waits for exactly want (in order) and then for a barrier message
// the test sends last, proving nothing else arrived in between.
func (r *received) expect(t *testing.T, who string, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-r.ch:
			if got != w {
				t.Fatalf("%s got %q, want %q", who, got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: timed out waiting for %q", who, w)
		}
	}
}

// expectUnordered waits for exactly the messages in want, in any order: for
// messages from different senders, whose relative order is not promised.
func (r *received) expectUnordered(t *testing.T, who string, want ...string) {
	t.Helper()
	missing := map[string]int{}
	for _, w := range want {
		missing[w]++
	}
	for range want {
		select {
		case got := <-r.ch:
			if missing[got] == 0 {
				t.Fatalf("%s got %q, want one of %v", who, got, missing)
			}
			missing[got]--
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: timed out waiting for %v", who, missing)
		}
	}
}

func dial(t *testing.T, tn *testNode, proto string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, tn.url+"room", &client.Options{Protocol: proto})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func invoke[T any](t *testing.T, c *client.Conn, target string, args ...any) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := client.InvokeAs[T](ctx, c, target, args...)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	return v
}

func invokeErr(t *testing.T, c *client.Conn, target string, args ...any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Invoke(ctx, target, args...)
	return err
}

func TestInvocations(t *testing.T) {
	h := &roomHub{}
	tn := startNode(t, hub.Config{}, map[string]any{"room": h})
	for _, p := range protocols {
		t.Run(p, func(t *testing.T) {
			c := dial(t, tn, p)
			if got := invoke[int](t, c, "Add", 2, 40); got != 42 {
				t.Fatalf("Add = %d", got)
			}
			if got := invoke[int](t, c, "aDD", -2, 1); got != -1 {
				t.Fatalf("case-insensitive aDD = %d", got)
			}
			if got := invoke[point](t, c, "Mirror", point{X: 1, Y: 2, L: "é"}); got != (point{X: 2, Y: 1, L: "é"}) {
				t.Fatalf("Mirror = %+v", got)
			}
			if err := invokeErr(t, c, "Nothing"); err != nil {
				t.Fatalf("void method: %v", err)
			}
			checkHubError(t, invokeErr(t, c, "Oops"), "An unexpected error occurred invoking 'Oops' on the server.")
			checkHubError(t, invokeErr(t, c, "Refuse", "no"), "An unexpected error occurred invoking 'Refuse' on the server. HubException: refused: no")
			checkHubError(t, invokeErr(t, c, "Panic"), "An unexpected error occurred invoking 'Panic' on the server.")
			checkHubError(t, invokeErr(t, c, "Missing"), "Failed to invoke 'Missing' due to an error on the server. HubException: Method does not exist.")
			if err := invokeErr(t, c, "Add", 1); err == nil {
				t.Fatal("Add with one argument must fail")
			}
			if err := invokeErr(t, c, "Add", "x", "y"); err == nil {
				t.Fatal("Add with strings must fail")
			}
			// The connection survives all of that.
			if got := invoke[int](t, c, "Add", 1, 1); got != 2 {
				t.Fatalf("Add after errors = %d", got)
			}
		})
	}
}

func checkHubError(t *testing.T, err error, want string) {
	t.Helper()
	var he *client.HubError
	if !errors.As(err, &he) {
		t.Fatalf("error %v (%T) is not a *client.HubError", err, err)
	}
	if he.Message != want {
		t.Fatalf("hub error = %q, want %q", he.Message, want)
	}
}

func TestOrderAndLifecycle(t *testing.T) {
	h := &roomHub{}
	tn := startNode(t, hub.Config{}, map[string]any{"room": h})
	c := dial(t, tn, "json")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 200 {
		if err := c.Send(ctx, "Record", i); err != nil {
			t.Fatal(err)
		}
	}
	id := invoke[string](t, c, "Whoami") // runs after every Record
	h.mu.Lock()
	order := append([]int(nil), h.order...)
	connected := append([]string(nil), h.connected...)
	h.mu.Unlock()
	if len(order) != 200 || !sort.IntsAreSorted(order) {
		t.Fatalf("hub methods ran out of order or were lost: %v", order)
	}
	if len(connected) != 1 || connected[0] != id {
		t.Fatalf("OnConnected saw %v, want [%s]", connected, id)
	}
}

func TestRoutes(t *testing.T) {
	for _, p := range protocols {
		t.Run(p, func(t *testing.T) {
			tn := startNode(t, hub.Config{}, map[string]any{"room": &roomHub{}})
			a, b, c := dial(t, tn, p), dial(t, tn, "json"), dial(t, tn, "messagepack")
			ra, rb, rc := listen(a), listen(b), listen(c)
			ida, idb, idc := invoke[string](t, a, "Whoami"), invoke[string](t, b, "Whoami"), invoke[string](t, c, "Whoami")

			invoke[any](t, a, "ToAll", "1")
			ra.expect(t, "a", "all:1")
			rb.expect(t, "b", "all:1")
			rc.expect(t, "c", "all:1")

			invoke[any](t, a, "ToOthers", "2")
			invoke[any](t, a, "ToCaller", "3")
			ra.expect(t, "a", "caller:3")
			rb.expect(t, "b", "others:2")
			rc.expect(t, "c", "others:2")

			invoke[any](t, a, "ToClient", idb, "4")
			invoke[any](t, a, "ToClients", []string{ida, idc}, "5")
			invoke[any](t, a, "ToAllExcept", []string{ida, idb}, "6")
			rb.expect(t, "b", "client:4")
			ra.expect(t, "a", "clients:5")
			rc.expect(t, "c", "clients:5", "allExcept:6")

			invoke[any](t, a, "Join", "g1")
			invoke[any](t, b, "Join", "g1")
			invoke[any](t, c, "Join", "g2")
			invoke[any](t, a, "ToGroup", "g1", "7")
			invoke[any](t, a, "ToOthersInGroup", "g1", "8")
			invoke[any](t, c, "ToGroups", []string{"g1", "g2"}, "9")
			invoke[any](t, c, "ToGroupExcept", "g1", []string{idb}, "10")
			ra.expect(t, "a", "group:7", "groups:9", "groupExcept:10")
			rb.expect(t, "b", "group:7", "othersInGroup:8", "groups:9")
			rc.expect(t, "c", "groups:9")

			invoke[any](t, b, "Leave", "g1")
			invoke[any](t, a, "ToGroup", "g1", "11")
			// A barrier on the same route proves b got nothing more: b
			// rejoins, and the next group message is the first it sees.
			ra.expect(t, "a", "group:11")
			invoke[any](t, b, "Join", "g1")
			invoke[any](t, a, "ToGroup", "g1", "12")
			ra.expect(t, "a", "group:12")
			rb.expect(t, "b", "group:12")
			invoke[any](t, a, "ToAll", "end")
			ra.expect(t, "a", "all:end")
			rb.expect(t, "b", "all:end")
			rc.expect(t, "c", "all:end")
			for _, r := range []*received{ra, rb, rc} {
				select {
				case extra := <-r.ch:
					t.Fatalf("unexpected extra message %q", extra)
				default:
				}
			}
		})
	}
}

func TestStreams(t *testing.T) {
	tn := startNode(t, hub.Config{}, map[string]any{"room": &roomHub{}})
	for _, p := range protocols {
		t.Run(p, func(t *testing.T) {
			c := dial(t, tn, p)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := c.Stream(ctx, "Count", 5)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for {
				if _, ok := s.Next(ctx); !ok {
					break
				}
				var v int
				if err := s.Bind(&v); err != nil {
					t.Fatal(err)
				}
				got = append(got, v)
			}
			if err := s.Err(); err != nil || fmt.Sprint(got) != "[0 1 2 3 4]" {
				t.Fatalf("Count stream = %v, err %v", got, err)
			}

			id := invoke[string](t, c, "Whoami")
			sctx, scancel := context.WithCancel(ctx)
			fs, err := c.Stream(sctx, "Forever")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := fs.Next(ctx); !ok {
				t.Fatal("Forever gave nothing")
			}
			scancel()
			select {
			case who := <-cancelled:
				if who != id {
					t.Fatalf("cancelled stream of %s, want %s", who, id)
				}
			case <-ctx.Done():
				t.Fatal("cancelling the stream did not reach the hub method")
			}

			up := make(chan int)
			go func() {
				defer close(up)
				for i := 1; i <= 100; i++ {
					up <- i
				}
			}()
			if got := invoke[string](t, c, "Total", "sum", (<-chan int)(up)); got != "sum=5050" {
				t.Fatalf("upload stream Total = %q", got)
			}
		})
	}
}

func TestHubContextAndShutdown(t *testing.T) {
	h := &roomHub{}
	tn := startNode(t, hub.Config{}, map[string]any{"room": h})
	c := dial(t, tn, "json")
	r := listen(c)
	id := invoke[string](t, c, "Whoami")
	hc, err := tn.node.HubContext("room")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hc.Groups.Add(ctx, id, "news"); err != nil {
		t.Fatal(err)
	}
	if err := hc.Clients.Group("news").Send(ctx, "got", "ctx", "hello"); err != nil {
		t.Fatal(err)
	}
	r.expect(t, "c", "ctx:hello")
	if _, err := tn.node.HubContext("nope"); !errors.Is(err, hub.ErrUnknownHub) {
		t.Fatalf("HubContext(nope) = %v, want ErrUnknownHub", err)
	}
	if err := hc.Clients.All().Send(ctx, ""); err == nil {
		t.Fatal("a send without target must fail")
	}
	if err := hc.Clients.All().Send(ctx, "got", make(chan int)); err == nil {
		t.Fatal("an unencodable argument must fail")
	}

	// Shutdown sends a Close that allows reconnecting.
	if err := tn.node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("client not closed by Shutdown")
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || !ce.AllowReconnect {
		t.Fatalf("client ended with %v, want the server's Close", c.Err())
	}
	if err := tn.node.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.disconnected) != 1 || h.disconnected[0] != id {
		t.Fatalf("OnDisconnected saw %v", h.disconnected)
	}
}

// protoactorThrottle is protoactor's dead-letter log throttle: a goroutine
// it starts on the first dead letter (a message to an actor that has just
// stopped) and that ends by itself after the throttle interval (1 s).
var protoactorThrottle = goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")
