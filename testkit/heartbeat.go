package testkit

import (
	"fmt"
	"time"
)

// Keep-alive in the simulation. The node side of each connection is the
// real connection code (internal/conn), whose heartbeat sends a Ping after
// KeepAlive without sending and a Close after ClientTimeout without
// receiving, on the virtual clock; every client pings every KeepAlive unless
// Silence was called, as the SignalR clients do. Their timers are
// background timers: they run as virtual time passes (Advance, or while
// Settle waits for a later timer) but do not keep Settle going on their own.

// Intervals the simulated clients assume: SignalR's, the node defaults.
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

// startPinger arms the client side of p's keep-alive: a Ping every
// KeepAlive (it refreshes the node's read clock) unless Silence was
// called. The node side (Pings, the client timeout) is the real
// connection code's heartbeat. It returns a function that stops it.
func (cl *Client) startPinger(p *pipe) (stop func()) {
	s := cl.c.s
	var pinger *bgTimer
	pinger = s.afterBackground("", "p/"+cl.name, "ping "+p.id, KeepAliveInterval, func() {
		if p.closed || cl.silent {
			return
		}
		p.conn.Received()
		pinger.Reset(KeepAliveInterval)
	})
	return func() { pinger.Stop() }
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
