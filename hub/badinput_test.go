package hub_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// echoHub is the smallest hub: Echo returns its argument.
type echoHub struct{}

func (echoHub) Echo(_ *hub.Context, s string) (string, error) { return s, nil }

// witness is a healthy client that must keep working whatever other
// clients send.
func witness(t *testing.T, tn *testNode) *rawConn {
	t.Helper()
	c, _, err := dialRaw(t, tn.url, "chat", "", nil)
	if err != nil {
		t.Fatalf("witness dial: %v", err)
	}
	c.handshake(protocol.JSON)
	return c
}

// echoRoundTrip checks that c still gets answers.
func echoRoundTrip(t *testing.T, c *rawConn, id string) {
	t.Helper()
	c.send(&protocol.Invocation{InvocationID: id, Target: "echo", Arguments: []any{"still here " + id}})
	m := c.next()
	comp, ok := m.(*protocol.Completion)
	if !ok || comp.InvocationID != id || comp.Error != "" {
		t.Fatalf("witness got %#v, want a Completion for %s", m, id)
	}
	var s string
	c.bind(comp.Result, &s)
	if s != "still here "+id {
		t.Fatalf("witness echo = %q", s)
	}
}

func TestBadInputGetsClearErrors(t *testing.T) {
	tn := startNode(t, hub.Config{HandshakeTimeout: time.Second, MaxMessageSize: 1024}, map[string]any{"chat": echoHub{}})
	w := witness(t, tn)

	handshakeCases := []struct {
		name, send, want string
	}{
		{"unknown protocol", `{"protocol":"xml","version":1}` + "\x1e", "The protocol 'xml' is not supported."},
		{"unsupported version", `{"protocol":"json","version":3}` + "\x1e", "The server does not support version 3 of the 'json' protocol."},
		{"not JSON", "hello\x1e", "An unexpected error occurred during connection handshake."},
		{"missing version", `{"protocol":"json"}` + "\x1e", "An unexpected error occurred during connection handshake."},
		{"invalid UTF-8", "{\"protocol\":\"\xff\",\"version\":1}\x1e", "An unexpected error occurred during connection handshake."},
		{"too large", `{"protocol":"json","version":1,"x":"` + strings.Repeat("a", 2000) + `"}` + "\x1e", "Handshake was canceled."},
		{"no handshake in time", "", "Handshake was canceled."},
	}
	for i, tc := range handshakeCases {
		t.Run("handshake/"+tc.name, func(t *testing.T) {
			c, _, err := dialRaw(t, tn.url, "chat", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.send != "" {
				c.writeText(tc.send)
			}
			resp := c.handshakeResponse()
			if !strings.HasPrefix(resp.Error, tc.want) {
				t.Fatalf("handshake error = %q, want prefix %q", resp.Error, tc.want)
			}
			if _, _, err := c.ws.Read(c.ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("after a handshake error the socket must close normally, got %v", err)
			}
			echoRoundTrip(t, w, fmt.Sprint("h", i))
		})
	}

	recordCases := []struct {
		name  string
		proto protocol.HubProtocol
		frame []byte
		text  bool
		want  string
	}{
		{"malformed JSON", protocol.JSON, []byte("{\"type\":1,\x1e"), true, "Connection closed with an error"},
		{"JSON without type", protocol.JSON, []byte(`{"target":"echo"}` + "\x1e"), true, "Connection closed with an error"},
		{"unknown type", protocol.JSON, []byte(`{"type":42}` + "\x1e"), true, "unknown message type"},
		// Echoed back, it would put invalid UTF-8 in a text frame (RFC 6455).
		{"invalid UTF-8 JSON", protocol.JSON, []byte("{\"type\":1,\"target\":\"echo\",\"arguments\":[\"\xff\"]}\x1e"), true, "not valid UTF-8"},
		{"oversize JSON", protocol.JSON, []byte(`{"type":1,"target":"echo","arguments":["` + strings.Repeat("x", 2048) + `"]}` + "\x1e"), true, "maximum size"},
		{"binary frame on JSON", protocol.JSON, []byte(`{"type":6}` + "\x1e"), false, "binary frame"},
		{"malformed MessagePack", protocol.MessagePack, []byte{0x03, 0x93, 0x01, 0xc1}, false, "Connection closed with an error"},
		{"MessagePack not an array", protocol.MessagePack, []byte{0x01, 0x07}, false, "Connection closed with an error"},
		{"oversize MessagePack", protocol.MessagePack, append([]byte{0x80, 0x20}, make([]byte, 4096)...), false, "maximum size"},
	}
	for i, tc := range recordCases {
		t.Run("record/"+tc.name, func(t *testing.T) {
			c, _, err := dialRaw(t, tn.url, "chat", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			c.handshake(tc.proto)
			if tc.text {
				c.writeText(string(tc.frame))
			} else {
				c.writeBinary(tc.frame)
			}
			cl := c.expectClose()
			if !strings.Contains(cl.Error, tc.want) {
				t.Fatalf("Close error = %q, want it to mention %q", cl.Error, tc.want)
			}
			echoRoundTrip(t, w, fmt.Sprint("r", i))
		})
	}

	t.Run("bogus token", func(t *testing.T) {
		_, resp, err := dialRaw(t, tn.url, "chat", "id=AAAAAAAAAAAAAAAAAAAAAA", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("bogus token: err %v, resp %v; want 404", err, resp)
		}
	})

	t.Run("reused token", func(t *testing.T) {
		_, nr, _ := negotiate(t, tn.url, "chat", nil)
		first, _, err := dialRaw(t, tn.url, "chat", "id="+nr.ConnectionToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		first.handshake(protocol.JSON)
		_, resp, err := dialRaw(t, tn.url, "chat", "id="+nr.ConnectionToken, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusConflict {
			t.Fatalf("second connect with an active token: err %v resp %v; want 409", err, resp)
		}
	})
}

// TestAbruptDisconnects drops hundreds of connections at every stage:
// before the handshake, right after it, and with an invocation in flight.
func TestAbruptDisconnects(t *testing.T) {
	tn := startNode(t, hub.Config{}, map[string]any{"chat": echoHub{}})
	w := witness(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	handshake := protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: "json", Version: 1})
	call, _ := protocol.JSON.AppendMessage(nil, &protocol.Invocation{InvocationID: "1", Target: "echo", Arguments: []any{"bye"}})
	u := "ws" + strings.TrimPrefix(tn.url, "http") + "chat"
	var wg sync.WaitGroup
	var dialErrs atomic.Int64
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws, _, err := websocket.Dial(ctx, u, nil)
			if err != nil {
				dialErrs.Add(1)
				return
			}
			if i%3 > 0 {
				_ = ws.Write(ctx, websocket.MessageText, handshake)
			}
			if i%3 > 1 {
				_ = ws.Write(ctx, websocket.MessageText, call)
			}
			ws.CloseNow()
		}()
	}
	wg.Wait()
	if n := dialErrs.Load(); n > 0 {
		t.Fatalf("%d of 300 dials failed", n)
	}
	echoRoundTrip(t, w, "after-disconnects")
}

func TestJWT(t *testing.T) {
	secret := []byte("test-secret")
	a, err := auth.HS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	tn := startNode(t, hub.Config{Authenticator: a}, map[string]any{"chat": echoHub{}})
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	valid := sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	cases := []struct {
		name, token string
		want        int
	}{
		{"valid", valid, http.StatusOK},
		{"missing", "", http.StatusUnauthorized},
		{"expired", sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": now.Add(-time.Hour).Unix()}), http.StatusUnauthorized},
		{"wrong key", sign(jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}), http.StatusUnauthorized},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}), http.StatusUnauthorized},
		{"no sub", sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}), http.StatusUnauthorized},
		{"garbage", "not.a.jwt", http.StatusUnauthorized},
	}
	t.Run("token of another user", func(t *testing.T) {
		bob := sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "bob", "exp": now.Add(time.Hour).Unix()})
		_, nr, _ := negotiate(t, tn.url, "chat", http.Header{"Authorization": {"Bearer " + valid}})
		_, resp, err := dialRaw(t, tn.url, "chat", "id="+nr.ConnectionToken+"&access_token="+bob, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("alice's connection token used by bob: err %v resp %v; want 404", err, resp)
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.token != "" {
				h.Set("Authorization", "Bearer "+tc.token)
			}
			status, _, body := negotiate(t, tn.url, "chat", h)
			if status != tc.want {
				t.Fatalf("negotiate status = %d (%s), want %d", status, body, tc.want)
			}
			// The WebSocket request is checked too, with the token in the
			// query as browsers send it.
			q := ""
			if tc.token != "" {
				q = "access_token=" + tc.token
			}
			_, resp, err := dialRaw(t, tn.url, "chat", q, nil)
			if tc.want == http.StatusOK {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				return
			}
			if err == nil || resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("connect: err %v resp %v; want %d", err, resp, tc.want)
			}
		})
	}
}
