package hub_test

import (
	"net/http"
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// TestTokenSecretAgreedThroughTheBackplane: nodes given no TokenSecret on
// one backplane (a Memory bus; a standalone Redis) accept each other's
// connection tokens: negotiate on one, connect on the other. A node given
// a secret keeps it: the others' tokens are refused there (404).
func TestTokenSecretAgreedThroughTheBackplane(t *testing.T) {
	rs := redistest.StartStandalone(t)
	bus := backplane.NewMemoryBus()
	for _, tc := range []struct {
		name string
		bp   func() backplane.Backplane
	}{
		{"memory", func() backplane.Backplane { return bus.NewBackplane() }},
		{"redis", redisBackplanes(t, rs.Addr+",channelPrefix=tokensecret:")},
		// A wrapper (as service mode's) hides the inner backplane's optional
		// abilities from a type assertion; the node finds them through Unwrap.
		{"wrapped", func() backplane.Backplane { return onlyUnwraps{bus.NewBackplane()} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nodes []*testNode
			for i, secret := range []string{"", "", "given"} {
				cfg := hub.Config{Backplane: tc.bp(), NodeID: string(rune('a' + i))}
				if secret != "" {
					cfg.TokenSecret = []byte(secret)
				}
				nodes = append(nodes, startNode(t, cfg, roomHubs()))
			}
			status, nr, body := negotiate(t, nodes[0].url, "room", nil)
			if status != http.StatusOK {
				t.Fatalf("negotiate: %d %s", status, body)
			}
			c, _, err := dialRaw(t, nodes[1].url, "room", "id="+nr.ConnectionToken, nil)
			if err != nil {
				t.Fatalf("connect to the other node with the token (no secret configured on either): %v", err)
			}
			c.handshake(protoJSON())
			if id := callWhoami(t, c); id != nr.ConnectionID {
				t.Fatalf("the other node gave connection id %q, negotiate said %q", id, nr.ConnectionID)
			}
			_, nr, _ = negotiate(t, nodes[0].url, "room", nil)
			_, resp, err := dialRaw(t, nodes[2].url, "room", "id="+nr.ConnectionToken, nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
				t.Fatalf("a node with its own secret took another node's token: err %v, response %v", err, resp)
			}
		})
	}
}

// onlyUnwraps wraps a backplane without repeating its optional abilities.
type onlyUnwraps struct{ backplane.Backplane }

func (w onlyUnwraps) Unwrap() backplane.Backplane { return w.Backplane }
