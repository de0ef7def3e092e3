package redisbp_test

import (
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/backplane/backplanetest"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// conformance runs the shared suite against backplanes on addrs. Each
// backplane dials through its own faultNet, so FaultInjection cuts one
// backplane off Redis (its connections are closed and redials refused)
// while the others keep working, as when one node loses its network.
func conformance(t *testing.T, addrs []string, sharded redisbp.Sharding) {
	var faults sync.Map // *redisbp.Backplane -> *faultNet
	features := backplanetest.Features{
		FaultInjection: func(b backplane.Backplane, ok bool) {
			fn, found := faults.Load(b)
			if !found {
				t.Errorf("FaultInjection on a backplane the factory did not make")
				return
			}
			fn.(*faultNet).SetDown(!ok)
		},
	}
	prefix := uniquePrefix(t) // shared by the backplanes of one test, so they hear each other
	backplanetest.Run(t, features, func(t *testing.T, n int) []backplane.Backplane {
		bps := make([]backplane.Backplane, n)
		for i := range n {
			fn := newFaultNet()
			bp, _ := newBackplane(t, redisbp.Options{
				Addrs:          addrs,
				ChannelPrefix:  prefix,
				Sharded:        sharded,
				ProbeInterval:  100 * time.Millisecond,
				ConnectTimeout: 2 * time.Second,
			}, fn)
			faults.Store(bp, fn)
			bps[i] = bp
		}
		return bps
	})
}

func TestConformanceStandaloneClassic(t *testing.T) {
	t.Parallel()
	s := redistest.StartStandalone(t)
	conformance(t, []string{s.Addr}, redisbp.ShardedOff)
}

func TestConformanceStandaloneSharded(t *testing.T) {
	t.Parallel()
	s := redistest.StartStandalone(t)
	conformance(t, []string{s.Addr}, redisbp.ShardedAuto) // Redis 7: sharded
}

func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	conformance(t, c.Addrs, redisbp.ShardedAuto) // cluster: always sharded
}
