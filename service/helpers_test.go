package service

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

const testKey = "test-access-key-0123456789"

// testNode is one node in service mode on an httptest server.
type testNode struct {
	node *hub.Node
	svc  *Service
	srv  *httptest.Server
	url  string

	connected sync.Map // conn id -> chan struct{}, closed by the service's connectedHook
}

func (n *testNode) connectedCh(id string) chan struct{} {
	ch, _ := n.connected.LoadOrStore(id, make(chan struct{}))
	return ch.(chan struct{})
}

func startNode(t testing.TB, bp backplane.Backplane, store Store, tweak func(*Config)) *testNode {
	t.Helper()
	return startNodeHooked(t, bp, store, tweak, nil)
}

// startNodeHooked is startNode with hook called on the Service before it
// starts (to set test hooks).
func startNodeHooked(t testing.TB, bp backplane.Backplane, store Store, tweak func(*Config), hook func(*Service)) *testNode {
	t.Helper()
	cfg := Config{AccessKeys: []string{testKey, "second-key-for-rotation"}, Store: store}
	if tweak != nil {
		tweak(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	node, err := hub.New(hub.Config{Backplane: svc.Backplane(bp), Authenticator: svc.Authenticator(), TokenSecret: []byte("shared"), GroupAckTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{node: node, svc: svc}
	svc.connectedHook = func(_, id string) { close(tn.connectedCh(id)) }
	if hook != nil {
		hook(svc)
	}
	if err := svc.Register(node, "chat"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx, node); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", node.Handler())
	h := svc.Handler(node.Handler())
	mux.Handle("/api/", h)
	mux.Handle("/client/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node.Shutdown(sctx)
		srv.Close()
		_ = svc.Close()
	})
	tn.srv, tn.url = srv, srv.URL
	return tn
}

func mint(t testing.TB, key string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// restToken is what an app server mints for a REST call: aud the URL
// without the query.
func restToken(t testing.TB, rawURL string) string {
	u, _, _ := strings.Cut(rawURL, "?")
	return mint(t, testKey, jwt.MapClaims{"aud": u, "exp": time.Now().Add(time.Hour).Unix()})
}

// call makes one REST request with a valid token.
func call(t testing.TB, method, rawURL, body string) (int, string) {
	t.Helper()
	return callWith(t, method, rawURL, body, "Bearer "+restToken(t, rawURL))
}

func callWith(t testing.TB, method, rawURL, body, authz string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func expect(t testing.TB, method, rawURL, body string, want int) string {
	t.Helper()
	got, text := call(t, method, rawURL, body)
	if got != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, rawURL, got, want, text)
	}
	return text
}

// testClient is a SignalR client connected through /client/ with a token.
type testClient struct {
	conn *client.Conn
	msgs chan string
}

func connect(t testing.TB, n *testNode, user string, protocol string) *testClient {
	t.Helper()
	tc := &testClient{msgs: make(chan string, 100)}
	aud := n.url + "/client/?hub=chat"
	tok := mint(t, testKey, jwt.MapClaims{"aud": aud, "exp": time.Now().Add(time.Hour).Unix(), "nameid": user})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.url+"/client/?hub=chat", &client.Options{
		Protocol:    protocol,
		AccessToken: func(context.Context) (string, error) { return tok, nil },
		Handlers:    map[string]any{"msg": func(s string) { tc.msgs <- s }},
	})
	if err != nil {
		t.Fatalf("connect %s to %s: %v", user, n.url, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	tc.conn = c
	select { // the service has recorded it and joined its user's groups
	case <-n.connectedCh(c.ConnectionID()):
	case <-time.After(10 * time.Second):
		t.Fatalf("OnConnected of %s did not finish within 10 s", user)
	}
	return tc
}

// next returns the next message the client got.
func (c *testClient) next(t testing.TB) string {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("client %s got no message within 10 s", c.conn.ConnectionID())
		return ""
	}
}

// want checks that the next message is m.
func (c *testClient) want(t testing.TB, m string) {
	t.Helper()
	if got := c.next(t); got != m {
		t.Fatalf("client %s got %q, want %q", c.conn.ConnectionID(), got, m)
	}
}

// closed waits for the server to close the client and returns the error.
func (c *testClient) closed(t testing.TB) error {
	t.Helper()
	select {
	case <-c.conn.Done():
		return c.conn.Err()
	case <-time.After(10 * time.Second):
		t.Fatalf("client %s not closed within 10 s", c.conn.ConnectionID())
		return nil
	}
}

func body(target string, args ...any) string {
	b, _ := json.Marshal(map[string]any{"target": target, "arguments": args})
	return string(b)
}
