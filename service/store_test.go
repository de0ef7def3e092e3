package service

import (
	"context"
	"slices"
	"testing"
	"time"

	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// storeContract checks a Store's steps, the same for every implementation.
// advance, if not nil, moves the store's clock (ttl expiry is checked then).
func storeContract(t *testing.T, s Store, advance func(time.Duration)) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.AddConnection(ctx, "h", "c1", "u1", "n1"))
	must(s.AddConnection(ctx, "h", "c2", "u1", "n2"))
	must(s.AddConnection(ctx, "h", "c3", "", "n2"))
	if u, n, ok, err := s.Connection(ctx, "h", "c2"); err != nil || !ok || u != "u1" || n != "n2" {
		t.Fatalf("Connection c2 = %q %q %v %v", u, n, ok, err)
	}
	if _, _, ok, _ := s.Connection(ctx, "other", "c2"); ok {
		t.Fatal("hubs are not apart")
	}
	if m, _ := s.UserConnections(ctx, "h", "u1"); len(m) != 2 || m["c1"] != "n1" {
		t.Fatalf("UserConnections = %v", m)
	}
	if c, u, err := s.Counts(ctx, "h"); err != nil || c != 3 || u != 1 {
		t.Fatalf("Counts = %d %d %v", c, u, err)
	}
	if ok, _ := s.AddToGroup(ctx, "h", "g", "c1"); !ok {
		t.Fatal("AddToGroup c1 failed")
	}
	if ok, _ := s.AddToGroup(ctx, "h", "g", "nope"); ok {
		t.Fatal("AddToGroup of an unknown connection succeeded")
	}
	_, _ = s.AddToGroup(ctx, "h", "g2", "c1")
	if gs, _ := s.ConnectionGroups(ctx, "h", "c1"); !slices.Equal(sorted(gs), []string{"g", "g2"}) {
		t.Fatalf("ConnectionGroups = %v", gs)
	}
	if ok, _ := s.RemoveFromGroup(ctx, "h", "g2", "c1"); !ok {
		t.Fatal("RemoveFromGroup said not a member")
	}
	if ok, _ := s.RemoveFromGroup(ctx, "h", "g2", "c1"); ok {
		t.Fatal("RemoveFromGroup twice said member")
	}
	must(s.RemoveConnection(ctx, "h", "c1"))
	if m, _ := s.GroupConnections(ctx, "h", "g"); len(m) != 0 {
		t.Fatalf("group kept a removed connection: %v", m)
	}
	must(s.RemoveConnection(ctx, "h", "c2"))
	if c, u, _ := s.Counts(ctx, "h"); c != 1 || u != 0 {
		t.Fatalf("Counts after removal = %d %d", c, u)
	}
	must(s.AddUserToGroup(ctx, "h", "u", "forever", 0))
	must(s.AddUserToGroup(ctx, "h", "u", "hour", time.Hour))
	if advance != nil {
		must(s.AddUserToGroup(ctx, "h", "u", "gone", time.Minute))
		advance(2 * time.Minute)
	}
	gs, err := s.UserGroups(ctx, "h", "u")
	if err != nil || len(gs) != 2 || !gs["forever"].IsZero() || gs["hour"].IsZero() {
		t.Fatalf("UserGroups = %v %v", gs, err)
	}
	if _, gone := gs["gone"]; gone {
		t.Fatal("an expired membership is listed")
	}
	if ok, _ := s.RemoveUserFromGroup(ctx, "h", "u", "hour"); !ok {
		t.Fatal("RemoveUserFromGroup said not a member")
	}
	if ok, _ := s.RemoveUserFromGroup(ctx, "h", "u", "hour"); ok {
		t.Fatal("RemoveUserFromGroup twice said member")
	}
	must(s.Forget(ctx, "h", "n2"))
	if c, _, _ := s.Counts(ctx, "h"); c != 0 {
		t.Fatalf("Forget left %d connections", c)
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestMemoryStore(t *testing.T) {
	s := NewMemoryStore()
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	storeContract(t, s, func(d time.Duration) { now = now.Add(d) })
}

func TestRedisStore(t *testing.T) {
	srv := redistest.StartStandalone(t)
	bp, err := redisbp.NewFromString(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bp.Close() })
	storeContract(t, redisbp.NewStore(bp), nil)
}
