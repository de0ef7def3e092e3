package interop

import (
	"os"
	"path/filepath"
	"testing"
)

// TestInteropTransports runs the whole single-node interop suite with the official client forced
// to each HTTP transport (`transport: HttpTransportType.X`): long polling with JSON and
// MessagePack, Server-Sent Events with JSON (the client never uses SSE with MessagePack). The
// scenarios check that the client really connected over the forced transport.
func TestInteropTransports(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)
	bin := buildNode(t, root)
	addr := freeLoopbackAddr(t)
	startNode(t, bin, addr, "node", nodeArgs(addr, nodeID), false)
	for _, tc := range []struct{ transport, protocols string }{
		{"longpolling", "json,messagepack"},
		{"serversentevents", "json"},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			env := append(os.Environ(),
				"HUBFABRIC_URL=http://"+addr,
				"HUBFABRIC_HUB="+hub1,
				"HUBFABRIC_HUB2="+hub2,
				"HUBFABRIC_NODE_ID="+nodeID,
				"INTEROP_TRANSPORT="+tc.transport,
				"INTEROP_PROTOCOLS="+tc.protocols,
			)
			runScenarios(t, nodeJS, root, append(env, tokenEnv(t)...))
		})
	}
}
