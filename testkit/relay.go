package testkit

import (
	"fmt"

	"github.com/hubfabric/hubfabric/hub"
)

// Relay is the hub the testkit's send helpers and scenarios use: every
// route of hub.Clients and every group operation, each message sent as
// "msg" with one string argument, its tag. It is registered as "relay"
// when a cluster names no hub.
type Relay struct{}

// All sends tag to every connection.
func (Relay) All(c *hub.Context, tag string) error { return c.Clients.All().Send(c, "msg", tag) }

// Others sends tag to every connection but the caller.
func (Relay) Others(c *hub.Context, tag string) error {
	return c.Clients.Others().Send(c, "msg", tag)
}

// AllExcept sends tag to every connection but the given ones.
func (Relay) AllExcept(c *hub.Context, except []string, tag string) error {
	return c.Clients.AllExcept(except...).Send(c, "msg", tag)
}

// Group sends tag to a group.
func (Relay) Group(c *hub.Context, group, tag string) error {
	return c.Clients.Group(group).Send(c, "msg", tag)
}

// OthersInGroup sends tag to a group but the caller.
func (Relay) OthersInGroup(c *hub.Context, group, tag string) error {
	return c.Clients.OthersInGroup(group).Send(c, "msg", tag)
}

// User sends tag to every connection of a user.
func (Relay) User(c *hub.Context, user, tag string) error {
	return c.Clients.User(user).Send(c, "msg", tag)
}

// Client sends tag to one connection.
func (Relay) Client(c *hub.Context, connID, tag string) error {
	return c.Clients.Client(connID).Send(c, "msg", tag)
}

// Join puts the caller in a group.
func (Relay) Join(c *hub.Context, group string) error {
	return c.Groups.Add(c, c.ConnectionID, group)
}

// Leave takes the caller out of a group.
func (Relay) Leave(c *hub.Context, group string) error {
	return c.Groups.Remove(c, c.ConnectionID, group)
}

// Add puts any connection (on any node) in a group.
func (Relay) Add(c *hub.Context, connID, group string) error {
	return c.Groups.Add(c, connID, group)
}

// Remove takes any connection (on any node) out of a group.
func (Relay) Remove(c *hub.Context, connID, group string) error {
	return c.Groups.Remove(c, connID, group)
}

// Echo returns its argument.
func (Relay) Echo(_ *hub.Context, s string) string { return s }

// --- client helpers ------------------------------------------------------

func (cl *Client) tag() string {
	cl.c.chk.tags++
	return fmt.Sprintf("%s:%d", cl.name, cl.c.chk.tags)
}

func (cl *Client) send(kind, name string, excluded []string, method string, args ...any) *Call {
	tag := cl.tag()
	args = append(args, tag)
	call := cl.Invoke(method, args...)
	if call.issuedAt != 0 {
		cl.c.chk.sent(cl, call, tag, kind, name, excluded)
	}
	return call
}

// SendAll sends a tagged message to every connection (Relay.All).
func (cl *Client) SendAll() *Call { return cl.send("all", "", nil, "All") }

// SendOthers sends to every connection but this one.
func (cl *Client) SendOthers() *Call {
	return cl.send("all", "", []string{cl.connID}, "Others")
}

// SendAllExcept sends to every connection but the given clients'.
func (cl *Client) SendAllExcept(except ...*Client) *Call {
	ids := make([]string, len(except))
	for i, e := range except {
		ids[i] = e.connID
	}
	return cl.send("all", "", ids, "AllExcept", ids)
}

// SendGroup sends to a group.
func (cl *Client) SendGroup(group string) *Call { return cl.send("group", group, nil, "Group", group) }

// SendOthersInGroup sends to a group but this connection.
func (cl *Client) SendOthersInGroup(group string) *Call {
	return cl.send("group", group, []string{cl.connID}, "OthersInGroup", group)
}

// SendUser sends to every connection of user.
func (cl *Client) SendUser(user string) *Call { return cl.send("user", user, nil, "User", user) }

// SendTo sends to the current connection of another client.
func (cl *Client) SendTo(to *Client) *Call {
	return cl.send("conn", to.connID, nil, "Client", to.connID)
}

// Join puts this connection in group.
func (cl *Client) Join(group string) *Call {
	call := cl.Invoke("Join", group)
	if call.issuedAt != 0 {
		cl.c.chk.membership(cl.connID, group, true, call)
	}
	return call
}

// Leave takes this connection out of group.
func (cl *Client) Leave(group string) *Call {
	call := cl.Invoke("Leave", group)
	if call.issuedAt != 0 {
		cl.c.chk.membership(cl.connID, group, false, call)
	}
	return call
}

// AddToGroup puts another client's connection (on any node) in group.
func (cl *Client) AddToGroup(other *Client, group string) *Call {
	call := cl.Invoke("Add", other.connID, group)
	if call.issuedAt != 0 {
		cl.c.chk.membership(other.connID, group, true, call)
	}
	return call
}

// RemoveFromGroup takes another client's connection out of group.
func (cl *Client) RemoveFromGroup(other *Client, group string) *Call {
	call := cl.Invoke("Remove", other.connID, group)
	if call.issuedAt != 0 {
		cl.c.chk.membership(other.connID, group, false, call)
	}
	return call
}
