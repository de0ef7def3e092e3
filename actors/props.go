package actors

import "github.com/asynkron/protoactor-go/actor"

// PropsFactory builds the Props of every hubfabric actor, so a test harness
// can run them on its own dispatcher (for example a deterministic one).
type PropsFactory func(producer actor.Producer) *actor.Props

// DefaultProps uses protoactor's default dispatcher and unbounded mailbox
// (back-pressure lives at each connection's outbound queue, not in
// mailboxes).
func DefaultProps(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer)
}
