package service

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// fastBeat: heartbeats every 100 ms, lapsing after 400 ms.
func fastBeat(c *Config) {
	c.HeartbeatInterval = 100 * time.Millisecond
	c.HeartbeatTTL = 400 * time.Millisecond
	c.StoreTimeout = time.Second
}

func redisNode(t *testing.T, addrs string, beats *atomic.Int64) *testNode {
	t.Helper()
	bp, err := redisbp.NewFromString(addrs, func(o *redisbp.Options) {
		o.ChannelPrefix = "svc" + strings.ReplaceAll(t.Name(), "/", "-") + ":"
		o.ProbeInterval = 100 * time.Millisecond
	})
	if err != nil {
		t.Fatal(err)
	}
	return startNodeHooked(t, bp, redisbp.NewStore(bp), fastBeat, func(s *Service) {
		if beats != nil {
			s.beatHook = func() { beats.Add(1) }
		}
	})
}

func status(t *testing.T, method, url string) func() int {
	return func() int { code, _ := call(t, method, url, ""); return code }
}

func presence(t *testing.T, n *testNode) (conns, users int) {
	t.Helper()
	var p struct{ ConnectionCount, UserCount int }
	if err := json.Unmarshal([]byte(expect(t, "GET", n.url+"/api/hubfabric/hubs/chat/presence"+v, "", 200)), &p); err != nil {
		t.Fatal(err)
	}
	return p.ConnectionCount, p.UserCount
}

// TestDeadNodeSwept: node b's heartbeat stops as in a crash (its
// connections stay open but nothing is removed from the Store); after the
// ttl node a answers 404 for b's connection, user and group, counts
// without them and lists no member, and its sweep empties b's record; a's
// own connection survives the sweeps.
func TestDeadNodeSwept(t *testing.T) {
	srv := redistest.StartStandalone(t)
	var beats atomic.Int64
	a := redisNode(t, srv.Addr, &beats)
	b := redisNode(t, srv.Addr, nil)
	api := a.url + "/api/hubs/chat"
	ca := connect(t, a, "ua", "json")
	cb := connect(t, b, "ub", "json")
	aid, bid := ca.conn.ConnectionID(), cb.conn.ConnectionID()
	expect(t, "PUT", api+"/groups/gb/connections/"+bid+v, "", 200)
	expect(t, "HEAD", api+"/connections/"+bid+v, "", 200)
	expect(t, "HEAD", api+"/users/ub"+v, "", 200)
	expect(t, "HEAD", api+"/groups/gb"+v, "", 200)
	if c, u := presence(t, a); c != 2 || u != 2 {
		t.Fatalf("presence before = %d %d", c, u)
	}

	b.svc.stopHeartbeat()
	for _, url := range []string{api + "/connections/" + bid + v, api + "/users/ub" + v, api + "/groups/gb" + v} {
		pollUntil(t, 10*time.Second, "HEAD "+url+" is 404", func() bool { return status(t, "HEAD", url)() == 404 })
	}
	if c, u := presence(t, a); c != 1 || u != 1 {
		t.Fatalf("presence after b's heartbeat lapsed = %d %d, want 1 1", c, u)
	}
	if m := expect(t, "GET", a.url+"/api/hubfabric/hubs/chat/groups/gb/members"+v, "", 200); !strings.Contains(m, `"connectionCount":0`) {
		t.Fatalf("members of b's group: %s", m)
	}
	pollUntil(t, 10*time.Second, "a's sweep empties b's record", func() bool {
		ids, err := a.svc.cfg.Store.NodeConnections(context.Background(), "chat", b.node.ID())
		return err == nil && len(ids) == 0
	})
	// More sweep rounds on a; its own connection stays listed.
	seen := beats.Load()
	pollUntil(t, 10*time.Second, "three more rounds on a", func() bool { return beats.Load() >= seen+3 })
	expect(t, "HEAD", api+"/connections/"+aid+v, "", 200)
	expect(t, "HEAD", api+"/users/ua"+v, "", 200)
	if c, u := presence(t, b); c != 1 || u != 1 {
		t.Fatalf("presence read on b = %d %d, want 1 1", c, u)
	}
}

// TestOutageRelists: Redis is killed and restarted empty under a node with
// an open connection; once it is back, the node's heartbeat finds itself
// unknown and lists its connection (and user) again.
func TestOutageRelists(t *testing.T) {
	srv := redistest.StartStandalone(t)
	a := redisNode(t, srv.Addr, nil)
	c := connect(t, a, "ua", "json")
	id := c.conn.ConnectionID()
	api := a.url + "/api/hubs/chat"
	expect(t, "HEAD", api+"/connections/"+id+v, "", 200)
	srv.Kill()
	srv.Restart(t)
	pollUntil(t, 15*time.Second, "the connection is listed again", func() bool { return status(t, "HEAD", api+"/connections/"+id+v)() == 200 })
	expect(t, "HEAD", api+"/users/ua"+v, "", 200)
	if c, u := presence(t, a); c != 1 || u != 1 {
		t.Fatalf("presence after the outage = %d %d, want 1 1", c, u)
	}
}

func TestHeartbeatConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{HeartbeatInterval: -time.Second}, "must not be negative"},
		{Config{SweepBatch: -1}, "must not be negative"},
		{Config{HeartbeatTTL: 3 * time.Second}, "heartbeat ttl 3s must be at least twice the heartbeat interval 2s"},
		{Config{HeartbeatInterval: 6 * time.Second}, "heartbeat ttl 10s must be at least twice the heartbeat interval 6s"},
	} {
		tc.cfg.AccessKeys = []string{"k"}
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if err := (Config{AccessKeys: []string{"k"}, HeartbeatInterval: time.Second, HeartbeatTTL: 2 * time.Second}).Validate(); err != nil {
		t.Fatal(err)
	}
	if d := (Config{}).withDefaults(); d.HeartbeatInterval != DefaultHeartbeatInterval || d.HeartbeatTTL != DefaultHeartbeatTTL || d.SweepBatch != DefaultSweepBatch {
		t.Fatalf("defaults: %v %v %v", d.HeartbeatInterval, d.HeartbeatTTL, d.SweepBatch)
	}
}

// cutStore is a Store this node cannot reach while down is set.
type cutStore struct {
	Store
	down atomic.Bool
}

var errCut = errors.New("test: store unreachable")

func (c *cutStore) Heartbeat(ctx context.Context, hub, node string, ttl time.Duration) (bool, error) {
	if c.down.Load() {
		return false, errCut
	}
	return c.Store.Heartbeat(ctx, hub, node, ttl)
}

func (c *cutStore) Sweep(ctx context.Context, hub string, limit int) (int, error) {
	if c.down.Load() {
		return 0, errCut
	}
	return c.Store.Sweep(ctx, hub, limit)
}

// TestCutOffNodeRelisted: node b alone loses the Store for longer than the
// ttl; node a sweeps b's connection meanwhile. When b reaches the Store
// again its heartbeat finds it lapsed and lists its still-open connection
// again, with the group it was in.
func TestCutOffNodeRelisted(t *testing.T) {
	srv := redistest.StartStandalone(t)
	a := redisNode(t, srv.Addr, nil)
	bp, err := redisbp.NewFromString(srv.Addr, func(o *redisbp.Options) {
		o.ChannelPrefix = "svc" + strings.ReplaceAll(t.Name(), "/", "-") + ":"
	})
	if err != nil {
		t.Fatal(err)
	}
	cut := &cutStore{Store: redisbp.NewStore(bp)}
	b := startNode(t, bp, cut, fastBeat)
	cb := connect(t, b, "ub", "json")
	bid := cb.conn.ConnectionID()
	api := a.url + "/api/hubs/chat"
	expect(t, "PUT", api+"/groups/gb/connections/"+bid+v, "", 200)

	cut.down.Store(true)
	pollUntil(t, 10*time.Second, "a sweeps b's connection", func() bool {
		ids, err := a.svc.cfg.Store.NodeConnections(context.Background(), "chat", b.node.ID())
		return err == nil && len(ids) == 0 && status(t, "HEAD", api+"/connections/"+bid+v)() == 404
	})
	expect(t, "HEAD", api+"/groups/gb"+v, "", 404)
	cut.down.Store(false)
	pollUntil(t, 10*time.Second, "b's connection is listed again", func() bool { return status(t, "HEAD", api+"/connections/"+bid+v)() == 200 })
	expect(t, "HEAD", api+"/users/ub"+v, "", 200)
	expect(t, "HEAD", api+"/groups/gb"+v, "", 200)
	if m := expect(t, "GET", a.url+"/api/hubfabric/hubs/chat/groups/gb/members"+v, "", 200); !strings.Contains(m, bid) {
		t.Fatalf("members of gb after b is back: %s", m)
	}
	// The connection is still b's: a close through a reaches it.
	expect(t, "DELETE", api+"/connections/"+bid+v, "", 204)
	cb.closed(t)
}
