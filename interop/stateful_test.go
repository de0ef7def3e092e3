package interop

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hubfabric/hubfabric/internal/redistest"
)

// TestInteropStatefulReconnect runs interop/stateful.mjs: official clients with
// withStatefulReconnect() (JSON and MessagePack) reach node 1 through a TCP proxy that cuts
// their socket and holds the reconnect while another client sends a burst to them and they
// send to it; once the reconnect goes through, each side must have everything, once, in order.
// Two nodes on one redis-server run with --stateful-reconnect; in the other-node scenarios the
// proxy sends the reconnect to node 2, and the connection moves there (hand-over) with the same
// guarantees.
func TestInteropStatefulReconnect(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)
	bin := buildNode(t, root)
	rs := redistest.StartStandalone(t)
	conn := rs.Addr + ",channelPrefix=stateful:"
	nodes := []*nodeOnRedis{
		{name: "node1", id: "stateful-node-1", args: []string{"--redis", conn, "--token-secret", tokenSecret, "--stateful-reconnect"}},
		{name: "node2", id: "stateful-node-2", args: []string{"--redis", conn, "--token-secret", tokenSecret, "--stateful-reconnect"}},
	}
	startNodesOnRedis(t, bin, nodes)
	proxy := startCutProxy(t, nodes[0].addr, nodes[1].addr)
	env := append(os.Environ(),
		"HUBFABRIC_URL=http://"+nodes[0].addr,
		"HUBFABRIC_PROXY_URL=http://"+proxy.addr(),
		"HUBFABRIC_PROXY_CTL="+proxy.ctl.URL,
		"HUBFABRIC_HUB="+hub1,
		"JWT_SECRET="+jwtSecret,
	)
	env = append(env, "HUBFABRIC_URL2=http://"+nodes[1].addr)
	runScript(t, nodeJS, root, "stateful.mjs", env)
}
