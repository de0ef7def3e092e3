package service

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/client"
)

// fakeUpstream records every request; messages/echo answers its first
// argument, messages/fail answers 500, messages/slow answers when the
// request's context ends (the node's timeout).
type fakeUpstream struct {
	srv      *httptest.Server
	mu       sync.Mutex
	events   []upEvent
	arrived  chan upEvent
	inFlight chan struct{} // one value per slow request that has arrived
}

type upEvent struct {
	path   string
	raw    string // the escaped path
	header http.Header
	body   []byte
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	f := &fakeUpstream{arrived: make(chan upEvent, 100), inFlight: make(chan struct{}, 100)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ev := upEvent{path: r.URL.Path, raw: r.URL.EscapedPath(), header: r.Header.Clone(), body: b}
		f.mu.Lock()
		f.events = append(f.events, ev)
		f.mu.Unlock()
		f.arrived <- ev
		switch {
		case strings.HasSuffix(r.URL.Path, "/messages/fail"):
			http.Error(w, "backend says no", http.StatusInternalServerError)
		case strings.HasSuffix(r.URL.Path, "/messages/slow"):
			f.inFlight <- struct{}{}
			<-r.Context().Done()
		case strings.HasSuffix(r.URL.Path, "/messages/echo"):
			if r.Header.Get("Content-Type") == "application/x-msgpack" {
				var inv []any
				_ = msgpack.Unmarshal(b, &inv) // [type, headers, id, target, args, ...]
				out, _ := msgpack.Marshal(inv[4].([]any)[0])
				_, _ = w.Write(out)
				return
			}
			var inv struct{ Arguments []json.RawMessage }
			_ = json.Unmarshal(b, &inv)
			_, _ = w.Write(inv.Arguments[0])
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// next returns the next request that reached the upstream.
func (f *fakeUpstream) next(t *testing.T) upEvent {
	t.Helper()
	select {
	case ev := <-f.arrived:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no upstream request within 10 s")
		return upEvent{}
	}
}

func hmacHex(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

func TestUpstream(t *testing.T) {
	for _, proto := range []string{"json", "messagepack"} {
		t.Run(proto, func(t *testing.T) {
			up := newFakeUpstream(t)
			n := startNode(t, backplane.NewMemory(), NewMemoryStore(), func(c *Config) {
				c.Upstream = up.srv.URL + "/api/{hub}/{category}/{event}"
				c.UpstreamTimeout = 2 * time.Second
			})
			alice := connect(t, n, "alice", proto)
			id := alice.conn.ConnectionID()
			connected := up.next(t)
			if connected.path != "/api/chat/connections/connected" {
				t.Fatalf("first event %s, want connected", connected.path)
			}
			h := connected.header
			for k, want := range map[string]string{
				"X-ASRS-Connection-Id": id, "X-ASRS-Hub": "chat", "X-ASRS-Category": "connections", "X-ASRS-Event": "connected",
				"X-ASRS-User-Id":   "alice",
				"X-ASRS-Signature": "sha256=" + hmacHex(testKey, id) + ",sha256=" + hmacHex("second-key-for-rotation", id),
			} {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if c := h.Get("X-ASRS-User-Claims"); !strings.Contains(c, `{"type":"nameid","value":"alice"}`) || strings.Contains(c, "asrs.s.") {
				t.Errorf("X-ASRS-User-Claims = %s", c)
			}
			if q := h.Get("X-ASRS-Client-Query"); strings.Contains(q, "access_token") || strings.Contains(q, "id=") {
				t.Errorf("X-ASRS-Client-Query leaks a token: %q", q)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// A blocking invocation gets the upstream's answer as its result.
			got, err := client.InvokeAs[map[string]any](ctx, alice.conn, "echo", map[string]any{"n": 42, "s": "hi"})
			if err != nil || fmt.Sprint(got["s"]) != "hi" || fmt.Sprint(got["n"]) != "42" {
				t.Fatalf("echo: %v, %v", got, err)
			}
			msg := up.next(t)
			if msg.path != "/api/chat/messages/echo" || msg.header.Get("X-ASRS-Event") != "echo" || msg.header.Get("X-ASRS-Category") != "messages" {
				t.Fatalf("message event %s %v", msg.path, msg.header)
			}
			wantCT := map[string]string{"json": "application/json", "messagepack": "application/x-msgpack"}[proto]
			if ct := msg.header.Get("Content-Type"); ct != wantCT {
				t.Fatalf("Content-Type %q, want %q", ct, wantCT)
			}
			if proto == "json" && !strings.Contains(string(msg.body), `"target":"echo"`) {
				t.Fatalf("JSON body %s", msg.body)
			}
			// A non-2xx answer fails the invocation with an error saying so.
			_, err = alice.conn.Invoke(ctx, "fail")
			if err == nil || !strings.Contains(err.Error(), "answered 500") {
				t.Fatalf("fail: %v, want an error naming the 500", err)
			}
			up.next(t)
			// A slow upstream times out; meanwhile another client is served.
			bob := connect(t, n, "bob", proto)
			up.next(t) // bob's connected
			slow := make(chan error, 1)
			go func() { _, err := alice.conn.Invoke(ctx, "slow"); slow <- err }()
			<-up.inFlight
			up.next(t)
			if r, err := client.InvokeAs[string](ctx, bob.conn, "echo", "bob-ok"); err != nil || r != "bob-ok" {
				t.Fatalf("bob's echo during alice's slow call: %q, %v", r, err)
			}
			up.next(t)
			if err := <-slow; err == nil || !strings.Contains(err.Error(), "no answer within 2s") {
				t.Fatalf("slow: %v, want a timeout error", err)
			}
			// Disconnected comes last.
			if err := bob.conn.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if ev := up.next(t); ev.path != "/api/chat/connections/disconnected" || ev.header.Get("X-ASRS-Connection-Id") != bob.conn.ConnectionID() {
				t.Fatalf("last event %s for %s, want bob's disconnected", ev.path, ev.header.Get("X-ASRS-Connection-Id"))
			}
			// A connection closed by the server: its disconnected event carries
			// the error.
			expect(t, "DELETE", n.url+"/api/hubs/chat/connections/"+id+v+"&reason=kicked", "", 204)
			ev := up.next(t)
			var detail struct{ Error string }
			if ev.path != "/api/chat/connections/disconnected" || json.Unmarshal(ev.body, &detail) != nil || !strings.Contains(detail.Error, "kicked") {
				t.Fatalf("alice's disconnected event: %s %q", ev.path, ev.body)
			}
		})
	}
}

func TestUpstreamDeadAndMissing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	n := startNode(t, backplane.NewMemory(), NewMemoryStore(), func(c *Config) { c.Upstream = dead + "/{hub}/{category}/{event}" })
	alice := connect(t, n, "alice", "json") // a dead upstream does not refuse connections
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := alice.conn.Invoke(ctx, "anything"); err == nil || !strings.Contains(err.Error(), "request failed") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dead upstream: %v, want an error saying the request was refused", err)
	}
	// Method names are path segments of the upstream URL: no path tricks.
	up := newFakeUpstream(t)
	u := startNode(t, backplane.NewMemory(), NewMemoryStore(), func(c *Config) {
		c.Upstream = up.srv.URL + "/api/{hub}/{category}/{event}"
		c.UpstreamCategories = "messages"
	})
	carol := connect(t, u, "carol", "json")
	for _, name := range []string{"..", "."} {
		if _, err := carol.conn.Invoke(ctx, name); err == nil || !strings.Contains(err.Error(), "cannot be forwarded") {
			t.Fatalf("method %q: %v, want a refusal", name, err)
		}
	}
	if r, err := client.InvokeAs[string](ctx, carol.conn, "echo", "a/../b"); err != nil || r != "a/../b" {
		t.Fatalf("echo: %q %v", r, err)
	}
	if _, err := carol.conn.Invoke(ctx, "x/../../echo"); err != nil {
		t.Fatalf("a name with slashes: %v", err)
	}
	for _, want := range []string{"/api/chat/messages/echo", "/api/chat/messages/x%2F..%2F..%2Fecho"} {
		ev := up.next(t)
		if got := ev.raw; got != want {
			t.Fatalf("upstream path %q, want %q", got, want)
		}
	}
	// Without an upstream an invocation fails, loudly.
	m := startNode(t, backplane.NewMemory(), NewMemoryStore(), nil)
	bob := connect(t, m, "bob", "json")
	if _, err := bob.conn.Invoke(ctx, "anything"); err == nil || !strings.Contains(err.Error(), "no upstream configured") {
		t.Fatalf("no upstream: %v", err)
	}
}

func TestUpstreamConcurrencyBound(t *testing.T) {
	up := newFakeUpstream(t)
	n := startNode(t, backplane.NewMemory(), NewMemoryStore(), func(c *Config) {
		c.Upstream = up.srv.URL + "/{hub}/{category}/{event}"
		c.UpstreamCategories = "messages" // no connection events: only the calls take slots
		c.UpstreamConcurrency = 1
		c.UpstreamTimeout = time.Second
	})
	alice := connect(t, n, "alice", "json")
	bob := connect(t, n, "bob", "json")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	slow := make(chan error, 1)
	go func() { _, err := alice.conn.Invoke(ctx, "slow"); slow <- err }()
	<-up.inFlight
	if _, err := bob.conn.Invoke(ctx, "echo", 1); err == nil || !strings.Contains(err.Error(), "no free upstream slot within 250ms") {
		t.Fatalf("bob's call with the only slot taken: %v, want an error naming the bound", err)
	}
	if err := <-slow; err == nil {
		t.Fatal("the slow call succeeded")
	}
	// The slot is free again.
	if r, err := client.InvokeAs[int](ctx, bob.conn, "echo", 7); err != nil || r != 7 {
		t.Fatalf("echo after the slot was freed: %d, %v", r, err)
	}
}
