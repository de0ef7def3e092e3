// Package actorreg makes a protoactor actor system's process registry
// smaller than protoactor's default, for the systems hubfabric makes.
package actorreg

import (
	"github.com/asynkron/protoactor-go/actor"
	cmap "github.com/orcaman/concurrent-map"
)

// Buckets is how many buckets Compact gives a process registry. protoactor
// makes 1,024 buckets, each a concurrent map of 32 shards: 32,768 Go maps,
// 2.9 MB before the first actor, and each map grows a 272-byte slot group
// with its first entry, so while a system has far fewer actors than maps
// nearly every actor pays a group of its own. 8 buckets are 256 maps
// (about 23 KB) and still 256 locks, for a registry that is used when an
// actor starts or stops and when a PID is first resolved (a PID keeps its
// process after that).
const Buckets = 8

// Compact gives sys a process registry of Buckets buckets, holding every
// process registered so far (the event stream, dead letters). It must run
// before sys is shared: nothing may touch the registry meanwhile.
func Compact(sys *actor.ActorSystem) {
	old := sys.ProcessRegistry.LocalPIDs
	sm := &actor.SliceMap{LocalPIDs: make([]cmap.ConcurrentMap, Buckets)}
	for i := range sm.LocalPIDs {
		sm.LocalPIDs[i] = cmap.New()
	}
	for _, bucket := range old.LocalPIDs {
		// IterCb, not Items: Items starts a goroutine per shard.
		bucket.IterCb(func(id string, p any) { sm.GetBucket(id).Set(id, p) })
	}
	sys.ProcessRegistry.LocalPIDs = sm
}
