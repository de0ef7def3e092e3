package redisbp_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// TestSharedSecretFirstProposalWins: backplanes with one prefix on one
// Redis (standalone and Cluster) agree on the first proposal, even when
// they propose at once; another prefix keeps its own; after Close the call
// fails with ErrClosed.
func TestSharedSecretFirstProposalWins(t *testing.T) {
	t.Parallel()
	s := redistest.StartStandalone(t)
	c := redistest.StartCluster(t, 3)
	for _, tc := range []struct {
		name string
		conn string
	}{{"standalone", s.Addr}, {"cluster", strings.Join(c.Addrs, ",")}} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := uniquePrefix(t)
			ctx := context.Background()
			newBP := func(prefix string) *redisbp.Backplane {
				bp, err := redisbp.NewFromString(tc.conn + ",channelPrefix=" + prefix)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = bp.Close() })
				return bp
			}
			const n = 8
			got := make([][]byte, n)
			var wg sync.WaitGroup
			for i := range n {
				bp := newBP(prefix)
				wg.Add(1)
				go func() {
					defer wg.Done()
					v, err := bp.SharedSecret(ctx, "k", []byte{byte('a' + i), 1, 2, 3})
					if err != nil {
						t.Error(err)
					}
					got[i] = v
				}()
			}
			wg.Wait()
			for i := range n {
				if !bytes.Equal(got[i], got[0]) || len(got[0]) != 4 {
					t.Fatalf("backplane %d got %q, backplane 0 %q: they must agree on one proposal", i, got[i], got[0])
				}
			}
			other, err := newBP(uniquePrefix(t)).SharedSecret(ctx, "k", []byte("other"))
			if err != nil || string(other) != "other" {
				t.Fatalf("another prefix got %q, %v; want its own proposal", other, err)
			}
			bp := newBP(prefix)
			_ = bp.Close()
			if _, err := bp.SharedSecret(ctx, "k", []byte("x")); !errors.Is(err, backplane.ErrClosed) {
				t.Fatalf("after Close: %v, want ErrClosed", err)
			}
		})
	}
}
