package interop

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/hubfabric/hubfabric/internal/redistest"
)

// roundRobin is a tiny HTTP proxy that sends each request to the next of its backends in turn
// (WebSocket upgrades included, as httputil.ReverseProxy does them): no sticky sessions, so a
// client's negotiate, event stream, polls, sends and deletes spread over every node.
type roundRobin struct {
	backends []*httputil.ReverseProxy
	next     atomic.Uint64
	// per counts the requests sent to each backend.
	per []atomic.Uint64
}

func newRoundRobin(t *testing.T, addrs []string) string {
	t.Helper()
	rr := &roundRobin{per: make([]atomic.Uint64, len(addrs))}
	for _, a := range addrs {
		u, err := url.Parse("http://" + a)
		if err != nil {
			t.Fatal(err)
		}
		p := httputil.NewSingleHostReverseProxy(u)
		p.FlushInterval = -1 // event streams and poll answers go through at once
		rr.backends = append(rr.backends, p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rr}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		for i := range rr.per {
			t.Logf("round-robin proxy: %d requests to node %d", rr.per[i].Load(), i+1)
		}
	})
	return ln.Addr().String()
}

func (rr *roundRobin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int((rr.next.Add(1) - 1) % uint64(len(rr.backends)))
	rr.per[i].Add(1)
	rr.backends[i].ServeHTTP(w, r)
}

// TestInteropRoundRobinTwoNodes runs the single-node interop suite through a round-robin proxy
// in front of two nodes on one redis-server, started without --token-secret (they agree on one
// through Redis): each request of a client goes to the other node than its previous one, for
// WebSockets (JSON, MessagePack), long polling (JSON, MessagePack) and Server-Sent Events (JSON).
func TestInteropRoundRobinTwoNodes(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)
	bin := buildNode(t, root)
	rs := redistest.StartStandalone(t)
	conn := rs.Addr + ",channelPrefix=rr:"
	nodes := []*nodeOnRedis{
		{name: "node1", id: "rr-node-1", args: []string{"--redis", conn}},
		{name: "node2", id: "rr-node-2", args: []string{"--redis", conn}},
	}
	startNodesOnRedis(t, bin, nodes)
	proxy := newRoundRobin(t, []string{nodes[0].addr, nodes[1].addr})
	for _, tc := range []struct{ transport, protocols string }{
		{"websockets", "json,messagepack"},
		{"longpolling", "json,messagepack"},
		{"serversentevents", "json"},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			env := append(os.Environ(),
				"HUBFABRIC_URL=http://"+proxy,
				"HUBFABRIC_HUB="+hub1,
				"HUBFABRIC_HUB2="+hub2,
				"INTEROP_TRANSPORT="+tc.transport,
				"INTEROP_PROTOCOLS="+tc.protocols,
				fmt.Sprintf("HUBFABRIC_GROUP_ACK_TIMEOUT_MS=%d", groupAckTimeout.Milliseconds()),
			)
			runScenarios(t, nodeJS, root, append(env, tokenEnv(t)...))
		})
	}
}
