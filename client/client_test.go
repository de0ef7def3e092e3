package client_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/protocol"
)

// testTimeout bounds every wait so that a bug fails instead of hanging.
const testTimeout = 10 * time.Second

var protocols = []string{"json", "messagepack"}

// eachProtocol runs f as a parallel subtest per hub protocol.
func eachProtocol(t *testing.T, f func(t *testing.T, proto string)) {
	t.Helper()
	for _, p := range protocols {
		t.Run(p, func(t *testing.T) {
			t.Parallel()
			f(t, p)
		})
	}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func startServer(t testing.TB) *fakeServer {
	t.Helper()
	f := newFakeServer()
	t.Cleanup(f.Close)
	return f
}

// dial connects to the fake server's /hub and closes the Conn in Cleanup
// (which runs before the server's Close).
func dial(t testing.TB, f *fakeServer, opts *client.Options) *client.Conn {
	t.Helper()
	c, err := client.Dial(testContext(t), f.url("/hub"), opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// recv waits for a value on ch or fails the test.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// trySend sends v on ch unless that would block (hooks must never block
// the fake server).
func trySend[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}

func TestInvoke(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		c := dial(t, f, &client.Options{Protocol: proto})
		ctx := testContext(t)

		s, err := client.InvokeAs[string](ctx, c, "Echo", "hello")
		if err != nil || s != "hello" {
			t.Fatalf("Echo = %q, %v; want hello", s, err)
		}
		n, err := client.InvokeAs[int](ctx, c, "Add", 40, 2)
		if err != nil || n != 42 {
			t.Fatalf("Add = %d, %v; want 42", n, err)
		}
		type point struct {
			X int    `json:"x"`
			Y string `json:"y"`
		}
		pt, err := client.InvokeAs[point](ctx, c, "Echo", point{X: 1, Y: "a"})
		if err != nil || pt != (point{1, "a"}) {
			t.Fatalf("Echo(point) = %+v, %v", pt, err)
		}

		s, err = client.InvokeAs[string](ctx, c, "Split", strings.Repeat("partial ", 20))
		if err != nil || s != strings.Repeat("partial ", 20) {
			t.Fatalf("Split = %q, %v", s, err)
		}

		r, err := c.Invoke(ctx, "Void")
		if err != nil {
			t.Fatalf("Void: %v", err)
		}
		if r.HasValue() {
			t.Fatalf("Void has a value %q", r.Raw())
		}
		if err := r.Bind(new(int)); err != nil {
			t.Fatalf("Bind on void: %v", err)
		}

		tests := []struct {
			target, want string
		}{
			{"Fail", "boom"},
			{"NoSuchMethod", "Method does not exist"},
		}
		for _, tt := range tests {
			_, err := c.Invoke(ctx, tt.target)
			var he *client.HubError
			if !errors.As(err, &he) || !strings.Contains(he.Message, tt.want) {
				t.Fatalf("%s: err = %v; want a HubError containing %q", tt.target, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "client: ") {
				t.Errorf("error %q lacks the client: prefix", err)
			}
		}
	})
}

func TestInvokeIDsAndContext(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		ids := make(chan string, 10)
		f.onMessage = func(_ string, m protocol.Message) {
			switch m := m.(type) {
			case *protocol.Invocation:
				trySend(ids, m.InvocationID)
			case *protocol.StreamInvocation:
				trySend(ids, m.InvocationID)
			}
		}
		c := dial(t, f, &client.Options{Protocol: proto})
		ctx := testContext(t)
		if _, err := c.Invoke(ctx, "Void"); err != nil {
			t.Fatal(err)
		}
		st, err := c.Stream(ctx, "Count", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, ok := st.Next(ctx); ok; _, ok = st.Next(ctx) {
		}
		if err := c.Send(ctx, "Void"); err != nil {
			t.Fatal(err)
		}
		hctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := c.Invoke(hctx, "Hang")
			done <- err
		}()
		for i, want := range []string{"0", "1", "", "2"} {
			if got := recv(t, ids, "invocation "+want); got != want {
				t.Fatalf("invocation %d has id %q, want %q", i, got, want)
			}
		}
		cancel()
		if err := recv(t, done, "Hang to return"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Hang after cancel: %v", err)
		}
	})
}

func TestHandlers(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		welcome := make(chan string, 1)
		c := dial(t, f, &client.Options{
			Protocol: proto,
			// The server sends Welcome in the handshake's frame.
			Handlers: map[string]any{"welcome": func(id string) { welcome <- id }},
		})
		if got := recv(t, welcome, "Welcome"); got != c.ConnectionID() || got == "" {
			t.Fatalf("Welcome(%q), connection id %q", got, c.ConnectionID())
		}

		type note struct {
			msg string
			n   int
		}
		notes := make(chan note, 1)
		raws := make(chan []protocol.RawValue, 1)
		c.On("Notify", func(msg string, n int) { notes <- note{msg, n} }) // server sends "NOTIFY"
		c.On("notify", func(args []protocol.RawValue) { raws <- args })
		ctx := testContext(t)
		if err := c.Send(ctx, "Notify", "hi", 3); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, notes, "Notify"); got != (note{"hi", 3}) {
			t.Fatalf("Notify(%+v)", got)
		}
		if got := recv(t, raws, "raw Notify"); len(got) != 2 {
			t.Fatalf("raw Notify got %d args", len(got))
		}

		// Handlers run one at a time in arrival order, and a blocked
		// handler does not stop the read loop.
		seq := make(chan int, 3)
		release := make(chan struct{})
		c.On("seq", func(n int) {
			if n == 1 {
				<-release
			}
			seq <- n
		})
		if _, err := c.Invoke(ctx, "Batch"); err != nil {
			t.Fatal(err)
		}
		if s, err := client.InvokeAs[string](ctx, c, "Echo", "while blocked"); err != nil || s != "while blocked" {
			t.Fatalf("Echo while a handler blocks: %q, %v", s, err)
		}
		close(release)
		for want := 1; want <= 3; want++ {
			if got := recv(t, seq, "seq"); got != want {
				t.Fatalf("seq(%d), want seq(%d)", got, want)
			}
		}
	})
}

func TestHandlerValidation(t *testing.T) {
	t.Parallel()
	for _, h := range []any{nil, 42, func(...int) {}, func() (int, int) { return 0, 0 }, func() (int, error, bool) { return 0, nil, false }} {
		_, err := client.Dial(context.Background(), "http://127.0.0.1:1/hub", &client.Options{Handlers: map[string]any{"x": h}})
		if err == nil {
			t.Errorf("handler %T accepted", h)
		}
	}
	if _, err := client.Dial(context.Background(), "http://127.0.0.1:1/hub", &client.Options{Protocol: "xml"}); err == nil {
		t.Error("unknown protocol accepted")
	}
}

func TestClientResults(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		c := dial(t, f, &client.Options{Protocol: proto})
		c.On("double", func(n int) (int, error) { return 2 * n, nil })
		c.On("refuse", func(int) error { return errors.New("not today") })
		c.On("quiet", func(int) {})
		c.On("twice", func(n int) int { return n })
		c.On("TWICE", func(n int) int { return n })
		ctx := testContext(t)

		n, err := client.InvokeAs[int](ctx, c, "AskClient", "double", 21)
		if err != nil || n != 42 {
			t.Fatalf("double = %d, %v", n, err)
		}
		tests := []struct{ target, want string }{
			{"refuse", "not today"},
			{"quiet", "Client didn't provide a result."},
			{"missing", "Client didn't provide a result."},
			{"twice", "Client provided multiple results."},
		}
		for _, tt := range tests {
			_, err := c.Invoke(ctx, "AskClient", tt.target, 1)
			var he *client.HubError
			if !errors.As(err, &he) || he.Message != tt.want {
				t.Errorf("%s: %v; want HubError %q", tt.target, err, tt.want)
			}
		}
	})
}

func TestStream(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		cancels := make(chan string, 4)
		f.onMessage = func(_ string, m protocol.Message) {
			if m, ok := m.(*protocol.CancelInvocation); ok {
				trySend(cancels, m.InvocationID)
			}
		}
		c := dial(t, f, &client.Options{Protocol: proto})
		ctx := testContext(t)

		t.Run("complete", func(t *testing.T) {
			st, err := c.Stream(ctx, "Count", 5)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, ok := st.Next(ctx); ok; _, ok = st.Next(ctx) {
				var n int
				if err := st.Bind(&n); err != nil {
					t.Fatal(err)
				}
				got = append(got, n)
			}
			if st.Err() != nil || len(got) != 5 || got[4] != 4 {
				t.Fatalf("items %v, err %v", got, st.Err())
			}
		})
		t.Run("error", func(t *testing.T) {
			st, err := c.Stream(ctx, "FailStream")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := st.Next(ctx); !ok {
				t.Fatal("no first item")
			}
			if _, ok := st.Next(ctx); ok {
				t.Fatal("a second item")
			}
			var he *client.HubError
			if !errors.As(st.Err(), &he) || he.Message != "stream broke" {
				t.Fatalf("Err = %v", st.Err())
			}
		})
		t.Run("close", func(t *testing.T) {
			st, err := c.Stream(ctx, "Endless")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := st.Next(ctx); !ok {
				t.Fatal("no first item")
			}
			st.Close()
			recv(t, cancels, "CancelInvocation after Close")
			if _, ok := st.Next(ctx); ok || st.Err() != nil {
				t.Fatalf("after Close: ok=%v err=%v", ok, st.Err())
			}
		})
		t.Run("ctx", func(t *testing.T) {
			sctx, cancel := context.WithCancel(ctx)
			st, err := c.Stream(sctx, "Endless")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := st.Next(ctx); !ok {
				t.Fatal("no first item")
			}
			cancel()
			recv(t, cancels, "CancelInvocation after cancel")
			if _, ok := st.Next(ctx); ok || !errors.Is(st.Err(), context.Canceled) {
				t.Fatalf("after cancel: ok=%v err=%v", ok, st.Err())
			}
		})
	})
}

func TestUploadStream(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		c := dial(t, f, &client.Options{Protocol: proto})
		ctx := testContext(t)
		ch := make(chan int, 4)
		for i := 1; i <= 4; i++ {
			ch <- i
		}
		close(ch)
		sum, err := client.InvokeAs[int](ctx, c, "Sum", (<-chan int)(ch))
		if err != nil || sum != 10 {
			t.Fatalf("Sum = %d, %v; want 10", sum, err)
		}
	})
}

func TestNegotiate(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		t.Run("redirect and access token", func(t *testing.T) {
			f := startServer(t)
			auth := make(chan string, 4)
			f.onNegotiate = func(r *http.Request) {
				trySend(auth, r.URL.Path+" "+r.URL.Query().Get("negotiateVersion")+" "+r.URL.Query().Get("tenant")+" "+r.Header.Get("Authorization"))
			}
			connected := make(chan string, 1)
			f.onConnect = func(r *http.Request, _ string) {
				trySend(connected, r.URL.Query().Get("tenant")+" "+r.Header.Get("Authorization")+" "+r.Header.Get("X-Test"))
			}
			c, err := client.Dial(testContext(t), f.url("/redirect"), &client.Options{
				Protocol:    proto,
				AccessToken: func(context.Context) (string, error) { return "first-token", nil },
				Header:      http.Header{"X-Test": {"yes"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			if got, want := recv(t, auth, "negotiate"), "/redirect/negotiate 1  Bearer first-token"; got != want {
				t.Errorf("first negotiate %q, want %q", got, want)
			}
			if got, want := recv(t, auth, "redirected negotiate"), "/hub/negotiate 1 blue Bearer redirected-token"; got != want {
				t.Errorf("second negotiate %q, want %q", got, want)
			}
			if got, want := recv(t, connected, "WebSocket"), "blue Bearer redirected-token yes"; got != want {
				t.Errorf("WebSocket request %q, want %q", got, want)
			}
		})
		t.Run("error", func(t *testing.T) {
			f := startServer(t)
			_, err := client.Dial(testContext(t), f.url("/bad"), &client.Options{Protocol: proto})
			if err == nil || !strings.Contains(err.Error(), "nope") {
				t.Fatalf("Dial = %v; want the negotiate error", err)
			}
		})
		t.Run("handshake error", func(t *testing.T) {
			f := startServer(t)
			_, err := client.Dial(testContext(t), f.url("/hserr"), &client.Options{Protocol: proto, SkipNegotiation: true})
			if err == nil || !strings.Contains(err.Error(), "Server returned handshake error: The protocol 'x' is not supported.") {
				t.Fatalf("Dial = %v; want the handshake error", err)
			}
		})
		t.Run("skip negotiation", func(t *testing.T) {
			f := startServer(t)
			f.onNegotiate = func(*http.Request) { t.Error("negotiate with SkipNegotiation") }
			c := dial(t, f, &client.Options{Protocol: proto, SkipNegotiation: true})
			if c.ConnectionID() != "" {
				t.Errorf("ConnectionID = %q", c.ConnectionID())
			}
			if s, err := client.InvokeAs[string](testContext(t), c, "Echo", "x"); err != nil || s != "x" {
				t.Fatalf("Echo = %q, %v", s, err)
			}
		})
	})
}

func TestKeepAlive(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		pings := make(chan struct{}, 8)
		f.onMessage = func(_ string, m protocol.Message) {
			if _, ok := m.(*protocol.Ping); ok {
				trySend(pings, struct{}{})
			}
		}
		dial(t, f, &client.Options{Protocol: proto, KeepAliveInterval: 10 * time.Millisecond})
		for range 3 { // the one after the handshake, then keep-alives
			recv(t, pings, "Ping")
		}
	})
}

func TestServerTimeout(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t) // the fake server never pings
		c := dial(t, f, &client.Options{Protocol: proto, ServerTimeout: 50 * time.Millisecond})
		recv(t, c.Done(), "Done")
		if !errors.Is(c.Err(), client.ErrServerTimeout) {
			t.Fatalf("Err = %v", c.Err())
		}
	})
}

func TestClose(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		closes := make(chan struct{}, 1)
		hangs := make(chan struct{}, 1)
		f.onMessage = func(_ string, m protocol.Message) {
			switch m := m.(type) {
			case *protocol.Close:
				trySend(closes, struct{}{})
			case *protocol.Invocation:
				if m.Target == "Hang" {
					trySend(hangs, struct{}{})
				}
			}
		}
		c := dial(t, f, &client.Options{Protocol: proto})
		ctx := testContext(t)
		hung := make(chan error, 1)
		go func() {
			_, err := c.Invoke(ctx, "Hang")
			hung <- err
		}()
		recv(t, hangs, "Hang at the server")
		for range 2 {
			if err := c.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
		recv(t, closes, "Close message")
		recv(t, c.Done(), "Done")
		if !errors.Is(c.Err(), client.ErrClosed) {
			t.Fatalf("Err = %v", c.Err())
		}
		if err := recv(t, hung, "Hang to fail"); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("pending Invoke: %v", err)
		}
		if _, err := c.Invoke(ctx, "Echo", 1); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("Invoke after Close: %v", err)
		}
	})
}

func TestServerClose(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		tests := []struct {
			name      string
			allow     bool
			reconnect client.ReconnectPolicy
		}{
			{"no reconnect allowed", false, client.ReconnectDelays(0)},
			{"no policy", true, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				f := startServer(t)
				c := dial(t, f, &client.Options{Protocol: proto, Reconnect: tt.reconnect})
				_, err := c.Invoke(testContext(t), "CloseMe", tt.allow)
				if !errors.Is(err, client.ErrConnectionLost) {
					t.Fatalf("Invoke(CloseMe) = %v; want ErrConnectionLost", err)
				}
				recv(t, c.Done(), "Done")
				var ce *client.CloseError
				if !errors.As(c.Err(), &ce) || ce.Message != "bye" || ce.AllowReconnect != tt.allow {
					t.Fatalf("Err = %v", c.Err())
				}
				if !strings.Contains(c.Err().Error(), "Server returned an error on close: bye") {
					t.Fatalf("Err text %q", c.Err())
				}
			})
		}
	})
}

func TestReconnect(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		for _, method := range []string{"CloseMe", "Drop"} {
			t.Run(method, func(t *testing.T) {
				f := startServer(t)
				c := dial(t, f, &client.Options{Protocol: proto, Reconnect: client.ReconnectDelays(0, 0, 0)})
				reconnecting := make(chan error, 1)
				reconnected := make(chan string, 1)
				c.OnReconnecting(func(err error) { reconnecting <- err })
				c.OnReconnected(func(id string) { reconnected <- id })
				notes := make(chan string, 1)
				c.On("notify", func(s string) { notes <- s })
				oldID := c.ConnectionID()
				ctx := testContext(t)

				var args []any
				if method == "CloseMe" {
					args = []any{true}
				}
				if _, err := c.Invoke(ctx, method, args...); !errors.Is(err, client.ErrConnectionLost) {
					t.Fatalf("Invoke(%s) = %v; want ErrConnectionLost", method, err)
				}
				cause := recv(t, reconnecting, "OnReconnecting")
				var ce *client.CloseError
				if method == "CloseMe" && (!errors.As(cause, &ce) || !ce.AllowReconnect) {
					t.Errorf("OnReconnecting(%v)", cause)
				}
				newID := recv(t, reconnected, "OnReconnected")
				if newID == oldID || newID != c.ConnectionID() {
					t.Fatalf("reconnected as %q (old %q, now %q)", newID, oldID, c.ConnectionID())
				}
				if err := c.Send(ctx, "Notify", "again"); err != nil {
					t.Fatal(err)
				}
				if got := recv(t, notes, "notify after reconnect"); got != "again" {
					t.Fatalf("notify(%q)", got)
				}
			})
		}
	})
}

func TestReconnectGivesUp(t *testing.T) {
	t.Parallel()
	f := newFakeServer()
	defer f.Close()
	attempts := make(chan int, 8)
	c, err := client.Dial(testContext(t), f.url("/hub"), &client.Options{
		Reconnect: func(attempt int, _ error) (time.Duration, bool) {
			attempts <- attempt
			return 0, attempt < 2
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	f.rejectNegotiate.Store(true) // every reconnect attempt fails
	c.Invoke(testContext(t), "Drop")
	recv(t, c.Done(), "Done")
	if !strings.Contains(c.Err().Error(), "reconnecting gave up after 2 attempts") {
		t.Fatalf("Err = %v", c.Err())
	}
	for want := range 3 {
		if got := recv(t, attempts, "attempt"); got != want {
			t.Fatalf("attempt %d, want %d", got, want)
		}
	}
}

func TestCloseWhileReconnecting(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		waiting := make(chan struct{})
		c := dial(t, f, &client.Options{
			Protocol: proto,
			Reconnect: func(int, error) (time.Duration, bool) {
				close(waiting)
				return time.Hour, true
			},
		})
		ctx := testContext(t)
		if _, err := c.Invoke(ctx, "Drop"); !errors.Is(err, client.ErrConnectionLost) {
			t.Fatalf("Invoke(Drop) = %v", err)
		}
		recv(t, waiting, "the reconnect policy")
		if err := c.Send(ctx, "Void"); !errors.Is(err, client.ErrNotConnected) {
			t.Fatalf("Send while reconnecting = %v; want ErrNotConnected", err)
		}
		if err := c.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if !errors.Is(c.Err(), client.ErrClosed) {
			t.Fatalf("Err = %v", c.Err())
		}
	})
}

func TestMaxMessageSize(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		f := startServer(t)
		c := dial(t, f, &client.Options{Protocol: proto, MaxMessageSize: 100})
		_, err := c.Invoke(testContext(t), "Echo", strings.Repeat("x", 200))
		if !errors.Is(err, client.ErrConnectionLost) || !errors.Is(err, protocol.ErrMessageTooLarge) {
			t.Fatalf("Invoke = %v; want ErrConnectionLost and ErrMessageTooLarge", err)
		}
		recv(t, c.Done(), "Done")
		if !errors.Is(c.Err(), protocol.ErrMessageTooLarge) {
			t.Fatalf("Err = %v", c.Err())
		}
	})
}
