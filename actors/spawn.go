package actors

import (
	"fmt"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/internal/fabric"
)

// SpawnNode spawns a node's actor tree under root: the bridge and one hub
// actor per name in cfg.Hubs, and returns the Tree. It is hubfabric's own
// wiring, called by hub.Node.Start; its configuration type is internal, so
// programs outside this module use package hub instead. It does no I/O
// and does not block. A hub name that is empty or holds a ':' is an error
// (package hub allows fewer names still, see hub.ValidHubName).
func SpawnNode(root *actor.RootContext, cfg *fabric.NodeConfig) (*fabric.Tree, error) {
	for _, name := range cfg.Hubs {
		// A hub name is a fixed part of its channels: a ':' in it would let
		// a channel parse as another hub's route.
		if name == "" || strings.ContainsRune(name, ':') {
			return nil, fmt.Errorf("hub name %q: it must be non-empty and hold no ':'", name)
		}
	}
	hubs := map[string]*actor.PID{} // filled below, before the backplane delivers anything
	bridge, err := root.SpawnNamed(newBridgeProps(cfg, hubs), "hubfabric-bridge-"+cfg.NodeID)
	if err != nil {
		return nil, fmt.Errorf("spawn bridge: %w", err)
	}
	tree := &fabric.Tree{Bridge: bridge, Hubs: hubs}
	tree.Channels = []string{nodeChannel(cfg.NodeID)}
	echoes := make(map[string]*echoCounter, len(cfg.Hubs))
	for _, name := range cfg.Hubs {
		echoes[name] = new(echoCounter)
		pid, err := root.SpawnNamed(newHubProps(name, cfg, bridge, echoes[name]), "hubfabric-hub-"+cfg.NodeID+"-"+name)
		if err != nil {
			return tree, fmt.Errorf("spawn hub %q: %w", name, err)
		}
		tree.Hubs[name] = pid
		tree.Channels = append(tree.Channels, routeChannel(name, Route{Kind: RouteAll}))
	}
	tree.Handler = &backplaneHandler{
		root: root, bridge: bridge, hubs: tree.Hubs, echoes: echoes, nodeID: cfg.NodeID,
		counters: cfg.Counters, log: cfg.Logger, onEvent: cfg.OnBackplaneEvent,
	}
	return tree, nil
}
