package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Runtime is how the actors and the facade start goroutines, set timers,
// read the clock and wait for an actor's answer. Production uses
// RealRuntime; the testkit injects a deterministic one whose goroutines,
// timers and waits are all ordered by one seeded scheduler over a virtual
// clock.
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

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop cancels the call; false if it already ran or was stopped.
	Stop() bool
}

// Awaiter waits for the answer of a Runtime.Request.
type Awaiter interface {
	// Result waits for the answer; the error is non-nil on timeout.
	Result() (any, error)
}

// RealRuntime is the production Runtime: goroutines, time.AfterFunc and
// protoactor futures.
type RealRuntime struct{}

var _ Runtime = RealRuntime{}

// Go implements Runtime.
func (RealRuntime) Go(fn func()) { go fn() }

// AfterFunc implements Runtime.
func (RealRuntime) AfterFunc(d time.Duration, fn func()) Timer { return time.AfterFunc(d, fn) }

// Now implements Runtime.
func (RealRuntime) Now() time.Time { return time.Now() }

// Request implements Runtime with a protoactor future.
func (RealRuntime) Request(root *actor.RootContext, pid *actor.PID, msg any, timeout time.Duration) Awaiter {
	return root.RequestFuture(pid, msg, timeout)
}

// Join implements Runtime.
func (RealRuntime) Join(wg *sync.WaitGroup) { wg.Wait() }

func runtimeOr(r Runtime) Runtime {
	if r == nil {
		return RealRuntime{}
	}
	return r
}
