package conn

import (
	"fmt"
	"sync"
	"time"

	"github.com/hubfabric/hubfabric/internal/seam"
)

// heartbeatHost is what a heartbeat watches and acts on: the Conn (a
// recorder in tests). Its methods run on the timer's goroutine and must
// not block.
type heartbeatHost interface {
	// heartbeatTimes are the keep-alive (a ping after this long without
	// sending) and the client timeout (expire after this long without
	// receiving); both positive.
	heartbeatTimes() (keepAlive, timeout time.Duration)
	// now is the host's clock.
	now() time.Time
	// lastWriteTime is when something was last queued for the client.
	lastWriteTime() time.Time
	// lastReadTime is when the client last sent something; ok is false
	// before its first message.
	lastReadTime() (t time.Time, ok bool)
	// ping queues a Ping for the client.
	ping()
	// expire closes the connection; the heartbeat stops after calling it.
	expire(idle time.Duration)
}

// heartbeat runs SignalR's keep-alive (a ping after the keep-alive time
// without sending) and client timeout (expire after the timeout without
// receiving, from the client's first message) on one timer, re-armed for
// whichever comes first. It is held by value (in Conn) and keeps only its
// host and timer, so a connection's heartbeat costs its timer and nothing
// else; start it once, stop it any number of times (before start too).
// Safe for concurrent use.
type heartbeat struct {
	host heartbeatHost

	mu      sync.Mutex
	stopped bool
	t       seam.Timer // nil until start
}

// clientTimeoutMessage is the Close error sent to a client that sent
// nothing for timeout.
func clientTimeoutMessage(timeout time.Duration) string {
	return fmt.Sprintf("Connection closed with an error: the client sent nothing for %s.", timeout)
}

// start arms the timer on rt for the host's times.
func (h *heartbeat) start(rt seam.Runtime, host heartbeatHost) {
	h.mu.Lock() // fire reads t
	defer h.mu.Unlock()
	h.host = host
	if h.stopped {
		return
	}
	h.t = rt.AfterFunc(min(host.heartbeatTimes()), h.fire)
}

// fire is the timer's callback: a ping when nothing was written for the
// keep-alive time, expire when nothing was read for the timeout, else the
// timer re-armed for the nearer of the two.
func (h *heartbeat) fire() {
	keepAlive, timeout := h.host.heartbeatTimes()
	now := h.host.now()
	sinceWrite := now.Sub(h.host.lastWriteTime())
	if sinceWrite >= keepAlive {
		h.host.ping()
		sinceWrite = 0
	}
	next := keepAlive - sinceWrite
	if last, ok := h.host.lastReadTime(); ok {
		sinceRead := now.Sub(last)
		if sinceRead >= timeout {
			h.host.expire(sinceRead)
			return
		}
		next = min(next, timeout-sinceRead)
	}
	h.mu.Lock()
	if !h.stopped {
		h.t.Reset(next)
	}
	h.mu.Unlock()
}

// stop stops the timer for good. Idempotent.
func (h *heartbeat) stop() {
	h.mu.Lock()
	h.stopped = true
	if h.t != nil {
		h.t.Stop()
	}
	h.mu.Unlock()
}
