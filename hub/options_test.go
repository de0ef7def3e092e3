package hub_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

func TestOwnActorSystem(t *testing.T) {
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer system.Shutdown()
	tn := startNode(t, hub.Config{ActorSystem: system}, map[string]any{"room": &roomHub{}})
	c := dial(t, tn, "json")
	if got := invoke[int](t, c, "Add", 1, 2); got != 3 {
		t.Fatalf("Add = %d", got)
	}
	// The node's actors live in the given system.
	if _, ok := system.ProcessRegistry.GetLocal("hubfabric-hub-" + tn.node.ID() + "-room"); !ok {
		t.Fatal("no hub actor in the given actor system")
	}
}

func TestNegotiateDetails(t *testing.T) {
	tn := startNode(t, hub.Config{AllowedOrigins: []string{"*.example.com"}}, map[string]any{"chat": echoHub{}})

	resp, err := http.Get(tn.url + "chat/negotiate")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET negotiate = %d, want 405", resp.StatusCode)
	}

	// Version 0: the id is the token, as old clients expect.
	req, _ := http.NewRequest(http.MethodPost, tn.url+"chat/negotiate", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 4096)
	n, _ := resp.Body.Read(body)
	resp.Body.Close()
	nr, err := protocol.ParseNegotiateResponse(body[:n])
	if err != nil || nr.NegotiateVersion != 0 || nr.ConnectionID == "" || nr.ConnectionToken != nr.ConnectionID {
		t.Fatalf("version 0 negotiate = %+v, %v (%s)", nr, err, body[:n])
	}
	c, _, err := dialRaw(t, tn.url, "chat", "id="+nr.ConnectionID, nil)
	if err != nil {
		t.Fatalf("version 0 connect: %v", err)
	}
	c.handshake(protocol.JSON)

	// A non-integer version is an error in the body.
	req, _ = http.NewRequest(http.MethodPost, tn.url+"chat/negotiate?negotiateVersion=x", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, _ = resp.Body.Read(body)
	resp.Body.Close()
	if got := string(body[:n]); got != `{"error":"The client requested a non-integer protocol version."}` {
		t.Fatalf("bad version body = %s", got)
	}

	// Allowed and refused cross-origin requests, negotiate and WebSocket,
	// decided alike: the Origin is parsed as a URL and must be a host only
	// ("http://evil.com?.example.com" once passed negotiate's string match).
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"https://app.example.com", http.StatusOK}, {"https://evil.test", http.StatusForbidden},
		{"http://evil.com?.example.com", http.StatusForbidden}, {"http://evil.com/.example.com", http.StatusForbidden},
		{"http://evil.com#.example.com", http.StatusForbidden}, {"http://x@app.example.com", http.StatusForbidden},
		{"https://app.example.com/", http.StatusForbidden}, {"ftp://app.example.com", http.StatusForbidden}, {"null", http.StatusForbidden},
	} {
		origin, want := tc.origin, tc.want
		h := http.Header{"Origin": {origin}}
		status, _, _ := negotiate(t, tn.url, "chat", h)
		if status != want {
			t.Fatalf("negotiate from %s = %d, want %d", origin, status, want)
		}
		_, resp, err := dialRaw(t, tn.url, "chat", "", h)
		if want == http.StatusOK && err != nil {
			t.Fatalf("WebSocket from %s: %v", origin, err)
		}
		if want != http.StatusOK && (err == nil || resp == nil || resp.StatusCode != http.StatusForbidden) {
			t.Fatalf("WebSocket from %s: err %v resp %v, want 403", origin, err, resp)
		}
	}
	// The preflight answers with the allowed headers and credentials.
	req, _ = http.NewRequest(http.MethodOptions, tn.url+"chat/negotiate", nil)
	req.Header.Set("Origin", "https://app.example.com")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight headers = %v", resp.Header)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []hub.Config{{MaxMessageSize: -1}, {KeepAliveInterval: -time.Second}, {GroupAckTimeout: -1}, {BackplaneTimeout: -time.Millisecond}, {TokenTTL: -time.Second}, {MaxParallelInvocations: -2}, {StreamBufferCapacity: -1},
		{MaxPendingInvocations: -1}, {MaxPendingInvocationBytes: -1}, {MaxStreamsPerConnection: -1}, {MaxGroupsPerConnection: -1}, {MaxGroupNameBytes: -1}, {PollTimeout: -time.Second}} {
		if _, err := hub.New(cfg); err == nil || !strings.Contains(err.Error(), "must not be negative") {
			t.Fatalf("hub.New(%+v) = %v, want an error about a negative setting", cfg, err)
		}
	}
	if _, err := hub.New(hub.Config{AllowedOrigins: []string{"["}}); err == nil || !strings.Contains(err.Error(), "bad allowed origin pattern") {
		t.Fatalf("hub.New with a malformed origin pattern = %v, want the error from New (Validate), not from Start", err)
	}
	n, err := hub.New(hub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	for name, h := range map[string]any{"bad/name": echoHub{}, "": echoHub{}} {
		if err := n.Register(name, h); err == nil {
			t.Fatalf("Register(%q) must fail", name)
		}
	}
	if err := n.Start(context.Background()); err == nil {
		t.Fatal("Start with no hubs must fail")
	}
	if err := n.Register("twice", echoHub{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Register("twice", echoHub{}); err == nil {
		t.Fatal("registering a name twice must fail")
	}
	if err := n.Register("bad", badHub{}); err == nil {
		t.Fatal("a method with three results must be refused")
	}
	if _, err := n.HubContext("twice"); err == nil {
		t.Fatal("HubContext before Start must fail")
	}
}

type badHub struct{}

func (badHub) Three(*hub.Context) (int, int, error) { return 0, 0, nil }
