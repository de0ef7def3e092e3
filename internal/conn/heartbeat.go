package conn

import (
	"fmt"
	"sync"
	"time"

	"github.com/hubfabric/hubfabric/internal/seam"
)

// heartbeatConfig drives startHeartbeat. Every field is required.
type heartbeatConfig struct {
	// KeepAlive: Ping is called when nothing was written for this long.
	KeepAlive time.Duration
	// Timeout: Expire is called when nothing was read for this long,
	// counted from the first message the client sent.
	Timeout time.Duration
	// Now and AfterFunc are the clock (time.Now and time.AfterFunc in
	// production; a virtual clock in the testkit).
	Now       func() time.Time
	AfterFunc func(d time.Duration, fn func()) seam.Timer
	// LastWrite is when something was last queued for the client.
	LastWrite func() time.Time
	// LastRead is when the client last sent something; ok is false before
	// its first message.
	LastRead func() (t time.Time, ok bool)
	// Ping queues a Ping for the client.
	Ping func()
	// Expire closes the connection; the heartbeat stops after calling it.
	Expire func(idle time.Duration)
}

// clientTimeoutMessage is the Close error sent to a client that sent
// nothing for timeout.
func clientTimeoutMessage(timeout time.Duration) string {
	return fmt.Sprintf("Connection closed with an error: the client sent nothing for %s.", timeout)
}

// startHeartbeat runs SignalR's keep-alive (a Ping after KeepAlive without
// sending) and client timeout (Expire after Timeout without receiving,
// from the client's first message) on one timer, re-armed for whichever
// comes first. It returns stop, which is idempotent; the callbacks run on
// the timer's goroutine and must not block.
func startHeartbeat(cfg heartbeatConfig) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t seam.Timer
	mu.Lock() // the callback reads t
	defer mu.Unlock()
	t = cfg.AfterFunc(min(cfg.KeepAlive, cfg.Timeout), func() {
		now := cfg.Now()
		sinceWrite := now.Sub(cfg.LastWrite())
		if sinceWrite >= cfg.KeepAlive {
			cfg.Ping()
			sinceWrite = 0
		}
		next := cfg.KeepAlive - sinceWrite
		if last, ok := cfg.LastRead(); ok {
			sinceRead := now.Sub(last)
			if sinceRead >= cfg.Timeout {
				cfg.Expire(sinceRead)
				return
			}
			next = min(next, cfg.Timeout-sinceRead)
		}
		mu.Lock()
		if !stopped {
			t.Reset(next)
		}
		mu.Unlock()
	})
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}
