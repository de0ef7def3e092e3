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

// heartbeat runs SignalR's keep-alive (a ping after keepAlive without
// sending) and client timeout (expire after timeout without receiving,
// from the client's first message) on one timer, re-armed for whichever
// comes first. It is held by value (in Conn), so a connection's heartbeat
// costs its timer and nothing else; start it once, stop it any number of
// times (before start too). Safe for concurrent use.
type heartbeat struct {
	keepAlive, timeout time.Duration
	rt                 seam.Runtime // the clock and the timer
	host               heartbeatHost

	mu      sync.Mutex
	stopped bool
	t       seam.Timer // nil until start
}

// clientTimeoutMessage is the Close error sent to a client that sent
// nothing for timeout.
func clientTimeoutMessage(timeout time.Duration) string {
	return fmt.Sprintf("Connection closed with an error: the client sent nothing for %s.", timeout)
}

// start arms the timer for keepAlive and timeout, which must be
// positive.
func (h *heartbeat) start(rt seam.Runtime, keepAlive, timeout time.Duration, host heartbeatHost) {
	h.mu.Lock() // fire reads t
	defer h.mu.Unlock()
	h.keepAlive, h.timeout, h.rt, h.host = keepAlive, timeout, rt, host
	if h.stopped {
		return
	}
	h.t = rt.AfterFunc(min(keepAlive, timeout), h.fire)
}

// fire is the timer's callback: a ping when nothing was written for
// keepAlive, expire when nothing was read for timeout, else the timer
// re-armed for the nearer of the two.
func (h *heartbeat) fire() {
	now := h.rt.Now()
	sinceWrite := now.Sub(h.host.lastWriteTime())
	if sinceWrite >= h.keepAlive {
		h.host.ping()
		sinceWrite = 0
	}
	next := h.keepAlive - sinceWrite
	if last, ok := h.host.lastReadTime(); ok {
		sinceRead := now.Sub(last)
		if sinceRead >= h.timeout {
			h.host.expire(sinceRead)
			return
		}
		next = min(next, h.timeout-sinceRead)
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
