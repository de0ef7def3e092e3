package interop

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hubfabric/hubfabric/internal/redistest"
)

// TestInteropClientResults runs interop/results.mjs: the official client's handlers return
// values (and throw, are missing, or never answer while their client disconnects) to
// InvokeClient calls of another client on the same node and on the other node of a two-node
// cluster on one redis-server, with every pairing of JSON and MessagePack.
func TestInteropClientResults(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)
	bin := buildNode(t, root)
	rs := redistest.StartStandalone(t)
	conn := rs.Addr + ",channelPrefix=results:"
	nodes := []*nodeOnRedis{
		{name: "node1", id: "results-node-1", args: []string{"--redis", conn, "--token-secret", tokenSecret}},
		{name: "node2", id: "results-node-2", args: []string{"--redis", conn, "--token-secret", tokenSecret}},
	}
	startNodesOnRedis(t, bin, nodes)
	env := append(os.Environ(),
		"HUBFABRIC_URL=http://"+nodes[0].addr,
		"HUBFABRIC_URL2=http://"+nodes[1].addr,
		"HUBFABRIC_HUB="+hub1,
		"JWT_SECRET="+jwtSecret,
	)
	runScript(t, nodeJS, root, "results.mjs", env)
}
