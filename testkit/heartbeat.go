package testkit

import (
	"fmt"
	"time"

	"github.com/hubfabric/hubfabric/protocol"
	"github.com/hubfabric/hubfabric/transport"
)

// Keep-alive in the simulation. Simulated clients bypass the WebSocket
// transport, so the node side of each connection runs the transport's own
// heartbeat (transport.StartHeartbeat: a Ping after KeepAlive without
// sending, a Close after ClientTimeout without receiving) on the virtual
// clock, and every client pings every KeepAlive unless Silence was called,
// as the SignalR clients do. Their timers are background timers: they run
// as virtual time passes (Advance, or while Settle waits for a later timer)
// but do not keep Settle going on their own.

// Default intervals, SignalR's.
const (
	KeepAliveInterval = 15 * time.Second
	ClientTimeout     = 30 * time.Second
)

// bgTimer is a background timer of the scheduler, owned by a node (dropped
// when it is killed) or by nobody (owner "").
type bgTimer struct {
	s     *Scheduler
	owner string
	key   string
	label string
	fn    func()
	t     *task
}

func (s *Scheduler) afterBackground(owner, key, label string, d time.Duration, fn func()) *bgTimer {
	b := &bgTimer{s: s, owner: owner, key: key, label: label, fn: fn}
	b.Reset(d)
	return b
}

// Stop cancels the pending call.
func (b *bgTimer) Stop() bool {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if b.t == nil || b.t.stopped || b.t.fired {
		return false
	}
	b.t.stopped = true
	return true
}

// Reset re-arms the timer d from now.
func (b *bgTimer) Reset(d time.Duration) bool {
	active := b.Stop()
	if d <= 0 {
		d = 1
	}
	b.t = b.s.add(&task{key: b.key, node: b.owner, label: b.label, run: b.fn, background: true}, d)
	return active
}

// startHeartbeats arms the node side and the client side of the
// connection's keep-alive. It returns a function that stops both.
func (cl *Client) startHeartbeats() (stop func()) {
	s, o, owner := cl.c.s, cl.out, cl.node.owner
	now := func() time.Time { return Epoch.Add(s.Now()) }
	stopNode := transport.StartHeartbeat(transport.HeartbeatConfig{
		KeepAlive: KeepAliveInterval,
		Timeout:   ClientTimeout,
		Now:       now,
		AfterFunc: func(d time.Duration, fn func()) transport.Timer {
			return s.afterBackground(owner, "h/"+o.id, "heartbeat "+o.id, d, fn)
		},
		LastWrite: func() time.Time { return Epoch.Add(o.lastWrite) },
		LastRead:  func() (time.Time, bool) { return Epoch.Add(cl.lastSent), true },
		Ping:      func() { _ = o.Send(&protocol.Ping{}) },
		Expire: func(idle time.Duration) {
			cl.c.trace.add(s.Now(), "node", fmt.Sprintf("%s client timeout of %s after %s", owner, o.id, idle))
			o.Close(transport.ClientTimeoutMessage(ClientTimeout), true)
		},
	})
	var pinger *bgTimer
	pinger = s.afterBackground("", "p/"+cl.name, "ping "+o.id, KeepAliveInterval, func() {
		if o.closed || cl.silent {
			return
		}
		cl.lastSent = s.Now() // a Ping only refreshes the node's read clock
		pinger.Reset(KeepAliveInterval)
	})
	return func() {
		stopNode()
		pinger.Stop()
	}
}

// Silence makes the client stop sending anything, Pings included, as a
// client whose network died without closing the socket: the node closes it
// after ClientTimeout of virtual time.
func (cl *Client) Silence() {
	cl.c.trace.add(cl.c.s.Now(), "fault", fmt.Sprintf("%s silent (%s)", cl.name, cl.connID))
	cl.silent = true
}

// Pings counts the Pings the client received on its current connection.
func (cl *Client) Pings() int { return cl.pings }
