package service

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/client"
)

// gatedStore holds AddConnection until the gate opens: at the first
// Connection read that has finished, or when OnConnected has finished.
// Recording the connection after the client's handshake answer (in
// OnConnected) thus loses the race to the REST call every time;
// recording it before (in OnAttached) opens the gate by OnConnected,
// which runs meanwhile.
type gatedStore struct {
	Store
	once sync.Once
	gate chan struct{}
}

func (g *gatedStore) open() { g.once.Do(func() { close(g.gate) }) }

func (g *gatedStore) AddConnection(ctx context.Context, hub, conn, user, node string) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Store.AddConnection(ctx, hub, conn, user, node)
}

func (g *gatedStore) Connection(ctx context.Context, hub, conn string) (string, string, bool, error) {
	defer g.open()
	return g.Store.Connection(ctx, hub, conn)
}

// TestRESTRightAfterConnect: a REST call made as soon as the client has
// its handshake answer finds the connection (and its user).
func TestRESTRightAfterConnect(t *testing.T) {
	g := &gatedStore{Store: NewMemoryStore(), gate: make(chan struct{})}
	n := startNodeHooked(t, backplane.NewMemory(), g, nil, func(s *Service) {
		prev := s.connectedHook
		s.connectedHook = func(h, id string) { g.open(); prev(h, id) }
	})
	aud := n.url + "/client/?hub=chat"
	tok := mint(t, testKey, jwt.MapClaims{"aud": aud, "exp": time.Now().Add(time.Hour).Unix(), "nameid": "early"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, aud, &client.Options{AccessToken: func(context.Context) (string, error) { return tok, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	api := n.url + "/api/hubs/chat"
	expect(t, "HEAD", api+"/connections/"+c.ConnectionID()+v, "", 200)
	expect(t, "HEAD", api+"/users/early"+v, "", 200)
}

// TestCloseBeforeOnConnected: a close that arrives between OnAttached and
// OnConnected (no closer yet) is carried out when OnConnected gives the
// closer; OnConnected running first works too.
func TestCloseBeforeOnConnected(t *testing.T) {
	s, err := New(Config{AccessKeys: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.local["chat"] = map[string]*localConn{}
	s.addLocal("chat", "c1", "u")
	s.closeLocal("chat", []string{"c1"}, false, nil, "bye")
	var got []string
	s.setCloser("chat", "c1", func(r string) { got = append(got, r) })
	if len(got) != 1 || got[0] != "bye" {
		t.Fatalf("closer calls = %q, want [bye]", got)
	}
	s.setCloser("chat", "c2", func(r string) { got = append(got, "c2:"+r) })
	s.addLocal("chat", "c2", "u")
	s.closeLocal("chat", nil, true, []string{"c1"}, "all")
	if len(got) != 2 || got[1] != "c2:all" {
		t.Fatalf("closer calls = %q, want c2 closed by the close of all", got)
	}
	if !s.local["chat"]["c2"].attached || s.local["chat"]["c2"].user != "u" {
		t.Fatal("OnAttached after OnConnected lost the user")
	}
}
