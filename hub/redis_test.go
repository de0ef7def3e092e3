package hub_test

import (
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// redisBackplanes returns a factory of Redis backplanes on connection
// string conn, each closed when the test ends (the node closes it too;
// Close is idempotent).
func redisBackplanes(t *testing.T, conn string) func() backplane.Backplane {
	return func() backplane.Backplane {
		bp, err := redisbp.NewFromString(conn)
		if err != nil {
			t.Fatalf("redis backplane %q: %v", conn, err)
		}
		t.Cleanup(func() { _ = bp.Close() })
		return bp
	}
}

func TestTwoNodesOnRedis(t *testing.T) {
	cfg := hub.Config{GroupAckTimeout: 500 * time.Millisecond, ChannelPrefix: "hubtest-" + t.Name()}
	t.Run("standalone", func(t *testing.T) {
		srv := redistest.StartStandalone(t)
		checkEveryRouteAcrossNodes(t, startClusterOn(t, 2, cfg, roomHubs, redisBackplanes(t, srv.Addr)))
	})
	t.Run("cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3)
		conn := cl.Addrs[0] + "," + cl.Addrs[1] + "," + cl.Addrs[2]
		checkEveryRouteAcrossNodes(t, startClusterOn(t, 2, cfg, roomHubs, redisBackplanes(t, conn)))
	})
}
