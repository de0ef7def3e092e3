package backplane_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/backplane/backplanetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMemoryConformance(t *testing.T) {
	features := backplanetest.Features{
		FaultInjection: func(b backplane.Backplane, ok bool) {
			b.(*backplane.Memory).SetAvailable(ok)
		},
	}
	backplanetest.Run(t, features, func(t *testing.T, n int) []backplane.Backplane {
		bus := backplane.NewMemoryBus()
		bps := make([]backplane.Backplane, n)
		for i := range bps {
			m := bus.NewBackplane()
			t.Cleanup(func() { _ = m.Close() })
			bps[i] = m
		}
		return bps
	})
}
