package service

import (
	"context"
	"slices"
	"strings"
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
	for _, n := range []string{"n1", "n2"} {
		if _, err := s.Heartbeat(ctx, "h", n, time.Hour); err != nil {
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

// livenessContract checks heartbeats and sweeps. lapse waits until gone
// reports true after a heartbeat of ttl lapsed (moving a fake clock, or
// polling with a deadline). restoresGroups: the store keeps a swept
// connection's groups and restores them when it is added again.
func livenessContract(t *testing.T, s Store, ttl time.Duration, lapse func(gone func() bool), restoresGroups bool) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const h = "lh"
	if was, err := s.Heartbeat(ctx, h, "live", time.Hour); err != nil || was {
		t.Fatalf("first Heartbeat = %v %v, want not live before", was, err)
	}
	if was, _ := s.Heartbeat(ctx, h, "live", time.Hour); !was {
		t.Fatal("second Heartbeat: not live before")
	}
	must(s.AddConnection(ctx, h, "quiet", "", "silent"))
	if _, _, ok, _ := s.Connection(ctx, h, "quiet"); ok {
		t.Fatal("a connection of a node that never heartbeat is listed")
	}
	_, _ = s.Heartbeat(ctx, h, "silent", time.Hour)
	if _, _, ok, _ := s.Connection(ctx, h, "quiet"); !ok {
		t.Fatal("a connection of a node that heartbeats is not listed")
	}
	must(s.RemoveConnection(ctx, h, "quiet"))
	_, _ = s.Heartbeat(ctx, h, "dying", ttl)
	must(s.AddConnection(ctx, h, "c1", "ua", "dying"))
	must(s.AddConnection(ctx, h, "c2", "ua", "live"))
	must(s.AddConnection(ctx, h, "c3", "ub", "dying"))
	for _, c := range []string{"c1", "c2"} {
		if ok, err := s.AddToGroup(ctx, h, "g", c); !ok || err != nil {
			t.Fatalf("AddToGroup %s = %v %v", c, ok, err)
		}
	}
	if c, u, _ := s.Counts(ctx, h); c != 3 || u != 2 {
		t.Fatalf("Counts before the lapse = %d %d", c, u)
	}
	lapse(func() bool { _, _, ok, _ := s.Connection(ctx, h, "c1"); return !ok })
	check := func(when string) {
		t.Helper()
		if m, _ := s.UserConnections(ctx, h, "ua"); len(m) != 1 || m["c2"] != "live" {
			t.Fatalf("%s: UserConnections ua = %v, want c2 only", when, m)
		}
		if m, _ := s.UserConnections(ctx, h, "ub"); len(m) != 0 {
			t.Fatalf("%s: UserConnections ub = %v, want none", when, m)
		}
		if m, _ := s.GroupConnections(ctx, h, "g"); len(m) != 1 || m["c2"] != "live" {
			t.Fatalf("%s: GroupConnections = %v, want c2 only", when, m)
		}
		if gs, _ := s.ConnectionGroups(ctx, h, "c1"); len(gs) != 0 {
			t.Fatalf("%s: ConnectionGroups of a dead node's connection = %v", when, gs)
		}
		if c, u, err := s.Counts(ctx, h); err != nil || c != 1 || u != 1 {
			t.Fatalf("%s: Counts = %d %d %v, want 1 1", when, c, u, err)
		}
		if ok, _ := s.AddToGroup(ctx, h, "g2", "c3"); ok {
			t.Fatalf("%s: AddToGroup of a dead node's connection succeeded", when)
		}
		if _, _, ok, _ := s.Connection(ctx, h, "c2"); !ok {
			t.Fatalf("%s: the live node's connection is gone", when)
		}
	}
	check("lapsed, not swept")
	if n, err := s.Sweep(ctx, h, 1); err != nil || n != 1 {
		t.Fatalf("Sweep(1) = %d %v, want 1 (bounded)", n, err)
	}
	if n, err := s.Sweep(ctx, h, 100); err != nil || n != 1 {
		t.Fatalf("second Sweep = %d %v, want the 1 left", n, err)
	}
	if n, _ := s.Sweep(ctx, h, 100); n != 0 {
		t.Fatalf("third Sweep removed %d", n)
	}
	check("swept")
	if ids, _ := s.NodeConnections(ctx, h, "dying"); len(ids) != 0 {
		t.Fatalf("NodeConnections of the swept node = %v", ids)
	}
	if ids, _ := s.NodeConnections(ctx, h, "live"); !slices.Equal(ids, []string{"c2"}) {
		t.Fatalf("NodeConnections of the live node = %v", ids)
	}
	if was, _ := s.Heartbeat(ctx, h, "dying", time.Hour); was {
		t.Fatal("Heartbeat after a lapse says it was live")
	}
	must(s.AddConnection(ctx, h, "c1", "ua", "dying"))
	if _, _, ok, _ := s.Connection(ctx, h, "c1"); !ok {
		t.Fatal("a connection added again after the sweep is not listed")
	}
	if restoresGroups {
		if gs, _ := s.ConnectionGroups(ctx, h, "c1"); !slices.Equal(gs, []string{"g"}) {
			t.Fatalf("groups after adding a swept connection again = %v, want [g]", gs)
		}
		if m, _ := s.GroupConnections(ctx, h, "g"); len(m) != 2 {
			t.Fatalf("group members after adding a swept connection again = %v", m)
		}
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestMemoryStore(t *testing.T) {
	s := NewMemoryStore()
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	storeContract(t, s, func(d time.Duration) { now = now.Add(d) })
	livenessContract(t, s, time.Second, func(gone func() bool) {
		now = now.Add(time.Second + time.Millisecond)
		if !gone() {
			t.Fatal("still listed after the ttl")
		}
	}, false)
}

func TestRedisStore(t *testing.T) {
	srv := redistest.StartStandalone(t)
	bp, err := redisbp.NewFromString(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bp.Close() })
	st := redisbp.NewStore(bp)
	storeContract(t, st, nil)
	livenessContract(t, st, 300*time.Millisecond, func(gone func() bool) { pollUntil(t, 10*time.Second, "the lapsed node's connection leaves", gone) }, true)
}

// pollUntil polls cond (state in another process: Redis) until it holds,
// failing t after d.
func pollUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		<-tick.C
	}
}

// TestRedisClusterStore runs the contracts on a 3-master cluster: the
// scripts touch keys of one hash tag only, so they stay on one slot.
func TestRedisClusterStore(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	bp, err := redisbp.NewFromString(strings.Join(c.Addrs, ","))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bp.Close() })
	st := redisbp.NewStore(bp)
	storeContract(t, st, nil)
	livenessContract(t, st, 300*time.Millisecond, func(gone func() bool) { pollUntil(t, 10*time.Second, "the lapsed node's connection leaves", gone) }, true)
}
