// Package seam holds the points where a simulation replaces the real
// world: how hubfabric starts goroutines, sets timers, reads the clock,
// waits for an actor's answer, and builds actor Props. Production uses Real
// and DefaultProps; the testkit swaps in a deterministic scheduler over a
// virtual clock. It is internal: applications never see these seams.
package seam

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Runtime is how the actors, the facade and the connection code start
// goroutines, set timers, read the clock and wait for an actor's answer.
// Implementations are safe for concurrent use.
type Runtime interface {
	// Go runs fn on a new goroutine.
	Go(fn func())
	// AfterFunc calls fn (on some goroutine; fn must not block) once d has
	// passed.
	AfterFunc(d time.Duration, fn func()) Timer
	// Now is the current time.
	Now() time.Time
	// Request sends msg to pid with a reply address and returns a handle to
	// wait for the answer, at most timeout.
	Request(root *actor.RootContext, pid *actor.PID, msg any, timeout time.Duration) Awaiter
	// Join waits for wg. A simulated runtime may return at once: its
	// goroutines are finished by its scheduler instead.
	Join(wg *sync.WaitGroup)
}

// Timer is a pending AfterFunc call (*time.Timer satisfies it).
type Timer interface {
	// Stop cancels the call; false if it already ran or was stopped.
	Stop() bool
	// Reset re-arms the call d from now; false if it had run or was stopped.
	Reset(d time.Duration) bool
}

// Awaiter waits for the answer of a Runtime.Request.
type Awaiter interface {
	// Result waits for the answer; the error is non-nil on timeout.
	Result() (any, error)
}

// Real is the production Runtime: goroutines, time.AfterFunc, time.Now and
// protoactor futures.
type Real struct{}

var _ Runtime = Real{}

// Go implements Runtime.
func (Real) Go(fn func()) { go fn() }

// AfterFunc implements Runtime.
func (Real) AfterFunc(d time.Duration, fn func()) Timer { return time.AfterFunc(d, fn) }

// Now implements Runtime.
func (Real) Now() time.Time { return time.Now() }

// Request implements Runtime with a protoactor future.
func (Real) Request(root *actor.RootContext, pid *actor.PID, msg any, timeout time.Duration) Awaiter {
	return root.RequestFuture(pid, msg, timeout)
}

// Join implements Runtime.
func (Real) Join(wg *sync.WaitGroup) { wg.Wait() }

// Props builds the Props of every hubfabric actor, so a harness can run
// them on its own dispatcher (the testkit's is deterministic). It must not
// call producer: only protoactor calls it, when it spawns an actor (a hub
// spawns all its connection actors from one Props, whose producer hands out
// the actor the hub is spawning). One Props may spawn many actors.
type Props func(producer actor.Producer) *actor.Props

// DefaultProps uses protoactor's default dispatcher and unbounded mailbox
// (back-pressure lives at each connection's outbound queue, not in
// mailboxes).
func DefaultProps(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer)
}

// Seams bundles the replaceable parts a node is built with.
type Seams struct {
	Runtime Runtime
	Props   Props
}

// OrReal returns s with Real and DefaultProps where unset.
func (s Seams) OrReal() Seams {
	if s.Runtime == nil {
		s.Runtime = Real{}
	}
	if s.Props == nil {
		s.Props = DefaultProps
	}
	return s
}
