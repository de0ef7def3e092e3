package main

import (
	"context"
	"time"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// relay is the built-in hub of cmd/node: it lets clients reach each other
// through every route without writing a hub of their own. Methods match
// case-insensitively.
type relay struct {
	nodeID string
}

// Identity is WhoAmI's answer.
type Identity struct {
	ConnectionID string `json:"connectionId"`
	UserID       string `json:"userId"`
	NodeID       string `json:"nodeId"`
}

// Echo returns its argument unchanged.
func (relay) Echo(_ *hub.Context, x protocol.RawValue) (protocol.RawValue, error) { return x, nil }

// WhoAmI returns the caller's connection id, user id and node id.
func (r relay) WhoAmI(c *hub.Context) (Identity, error) {
	return Identity{ConnectionID: c.ConnectionID, UserID: c.UserID, NodeID: r.nodeID}, nil
}

// JoinGroup adds the caller to group.
func (relay) JoinGroup(c *hub.Context, group string) error {
	return c.Groups.Add(c, c.ConnectionID, group)
}

// LeaveGroup removes the caller from group.
func (relay) LeaveGroup(c *hub.Context, group string) error {
	return c.Groups.Remove(c, c.ConnectionID, group)
}

// AddToGroup adds any connection, on any node, to group.
func (relay) AddToGroup(c *hub.Context, connectionID, group string) error {
	return c.Groups.Add(c, connectionID, group)
}

// RemoveFromGroup removes any connection, on any node, from group.
func (relay) RemoveFromGroup(c *hub.Context, connectionID, group string) error {
	return c.Groups.Remove(c, connectionID, group)
}

// SendToAll invokes target(args...) on every connection.
func (relay) SendToAll(c *hub.Context, target string, args ...any) error {
	return c.Clients.All().Send(c, target, args...)
}

// SendToOthers invokes target(args...) on every connection but the caller.
func (relay) SendToOthers(c *hub.Context, target string, args ...any) error {
	return c.Clients.Others().Send(c, target, args...)
}

// SendToGroup invokes target(args...) on the members of group.
func (relay) SendToGroup(c *hub.Context, group, target string, args ...any) error {
	return c.Clients.Group(group).Send(c, target, args...)
}

// SendToOthersInGroup invokes target(args...) on group's members but the caller.
func (relay) SendToOthersInGroup(c *hub.Context, group, target string, args ...any) error {
	return c.Clients.OthersInGroup(group).Send(c, target, args...)
}

// SendToUser invokes target(args...) on every connection of userID.
func (relay) SendToUser(c *hub.Context, userID, target string, args ...any) error {
	return c.Clients.User(userID).Send(c, target, args...)
}

// SendToConnection invokes target(args...) on one connection.
func (relay) SendToConnection(c *hub.Context, connectionID, target string, args ...any) error {
	return c.Clients.Client(connectionID).Send(c, target, args...)
}

// maxCounterDelayMs bounds Counter's delay (one hour): larger values would
// overflow time.Duration, and no test needs them.
const maxCounterDelayMs = 3_600_000

// Counter streams the integers 0..n-1, one every delayMs milliseconds,
// until the client cancels.
func (relay) Counter(c *hub.Context, n, delayMs int) (<-chan int, error) {
	if n < 0 || delayMs < 0 || delayMs > maxCounterDelayMs {
		return nil, hub.Errorf("Counter needs n >= 0 and 0 <= delayMs <= %d", maxCounterDelayMs)
	}
	return hub.Produce(c, func(send func(int) bool) error {
		var tick <-chan time.Time
		if delayMs > 0 {
			t := time.NewTicker(time.Duration(delayMs) * time.Millisecond)
			defer t.Stop()
			tick = t.C
		}
		for i := 0; i < n; i++ {
			if tick != nil {
				select {
				case <-tick:
				case <-c.Done():
					return nil
				}
			}
			if !send(i) {
				return nil
			}
		}
		return nil
	}), nil
}

// Sum adds up the numbers the client uploads on a stream.
func (relay) Sum(_ *hub.Context, numbers <-chan float64) (float64, error) {
	total := 0.0
	for x := range numbers {
		total += x
	}
	return total, nil
}

// Fail fails with a hub error carrying message, which the client sees.
func (relay) Fail(_ *hub.Context, message string) error { return hub.Errorf("%s", message) }

// invokeClientTimeout bounds InvokeClient's wait for the invoked client.
const invokeClientTimeout = 30 * time.Second

// InvokeClient invokes target(args...) on connection connectionID, on any
// node, and returns the value the client's handler returned (client
// results). It fails, with a text the caller sees, when the client's
// handler throws or it has none ("Client didn't provide a result."), when
// the connection is unknown or disconnects before answering, and after
// 30 s without an answer.
func (relay) InvokeClient(c *hub.Context, connectionID, target string, args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(c, invokeClientTimeout)
	defer cancel()
	var v any
	if err := c.Clients.InvokeClient(ctx, connectionID, target, &v, args...); err != nil {
		return nil, err
	}
	return v, nil
}
