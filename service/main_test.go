package service

import (
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
)

func TestMain(m *testing.M) {
	redisbp.RouteLibraryLogs(slog.New(slog.DiscardHandler))
	// protoactor's dead-letter throttle goroutine outlives the actor systems
	// (as in package hub's TestMain).
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
