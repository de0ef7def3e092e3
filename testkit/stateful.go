package testkit

import (
	"context"
	"errors"
	"fmt"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/protocol"
)

// Stateful reconnect in the simulation. A stateful client's connection runs
// the node's real stateful socket (internal/conn.Stateful) under the real
// connection code, as the WebSocket transport runs it: Drop detaches its
// socket and the connection waits StatefulReconnectWindow of virtual time
// for the client; Resume brings the client back on the same node or on
// another one, which takes the connection over from its old node (the
// real hand-over of the hub actors). The client does what the official
// clients do: it numbers what it receives and skips what the node resends
// that it already has, and after a reconnect it sends Sequence and every
// message it sent, the node skipping what it already processed.

// StatefulClient connects a stateful-reconnect client of the default hub
// to node. The nodes must run with hub.Config.StatefulReconnect (see
// Configure).
func (c *Cluster) StatefulClient(name, user string, node *Node) *Client {
	c.t.Helper()
	if c.byName[name] != nil {
		c.fail(fmt.Sprintf("client %q exists", name))
	}
	cl := &Client{c: c, name: name, user: user, hub: c.opts.hubs[0].name, stateful: true, seqNext: 1}
	c.clients = append(c.clients, cl)
	c.byName[name] = cl
	if err := cl.Connect(node); err != nil {
		c.fail(fmt.Sprintf("connect %s: %v", name, err))
	}
	return cl
}

// statefulSession is what the transport puts before the hub for a
// stateful connection: the client's Acks and Sequences go to its Stateful,
// and duplicates of what the node already processed are dropped.
type statefulSession struct {
	inner *fabric.Inbound
	st    *conn.Stateful
	c     *conn.Conn
}

func (s *statefulSession) Receive(m protocol.Message) {
	pass, err := s.st.Received(m)
	if err != nil {
		s.c.Close("Connection closed with an error: "+err.Error(), false)
		return
	}
	if pass {
		s.inner.Receive(m)
	}
}

func (s *statefulSession) Closed(err error) { s.inner.Closed(err) }

// openStateful opens the node side of a stateful connection on p: a new
// one (state nil), or one rebuilt from the state its old node handed over,
// attached by attach.
func (cl *Client) openStateful(node *Node, p *pipe, state *conn.StatefulState,
	attach func(context.Context, *conn.Conn) (*fabric.Inbound, error)) error {
	on, size, _ := fabric.Hooks.Stateful(node.node)
	if !on {
		return errors.New("testkit: the node does not grant stateful reconnect (hub.Config.StatefulReconnect)")
	}
	var st *conn.Stateful
	if state == nil {
		st = conn.NewStateful(protocol.JSON, size, p)
	} else {
		var err error
		if st, err = conn.RestoreStateful(protocol.JSON, size, *state); err != nil {
			return err
		}
	}
	p.st = st
	opts := fabric.Hooks.ConnOptions(node.node, cl.connID, protocol.JSON)
	opts.Runtime = &connRuntime{nodeRuntime: nodeRuntime{s: cl.c.s, node: node.owner}, id: cl.connID}
	opts.Logger = nil
	opts.Resumed = state != nil
	c, err := conn.Open(context.Background(), st, opts, func(ctx context.Context, c *conn.Conn) (conn.Session, error) {
		in, err := attach(ctx, c)
		if err != nil {
			return nil, err
		}
		cl.session = &statefulSession{inner: in, st: st, c: c}
		return cl.session, nil
	})
	p.conn = c
	if err != nil {
		p.closed = true
		return err
	}
	p.attached = true
	return nil
}

// readerEnd is what the transport's reader does when a stateful
// connection's socket p ends: the connection ends if it was closed or
// moved away, else it waits for its client for the node's window.
func (cl *Client) readerEnd(p *pipe, err error) {
	switch {
	case p.st.Moved():
		p.conn.EndMoved()
	case p.st.Closed():
		p.conn.End(err)
	default:
		p.st.Detach(p)
		p.conn.HandOff()
		_, _, window := fabric.Hooks.Stateful(cl.node.node)
		p.window = cl.c.s.afterBackground(cl.node.owner, "w/"+p.id, "reconnect window "+p.id, window, func() {
			p.conn.HandedOff()
			if p.st.Moved() {
				p.conn.EndMoved()
				return
			}
			p.conn.End(fmt.Errorf("the client did not reconnect within %s after its socket dropped", window))
			if cl.out == p {
				cl.Closes = append(cl.Closes, "reconnect window passed")
				cl.c.onClosed(cl)
			}
		})
	}
}

// Resume reconnects a stateful client whose socket dropped (Drop) to node,
// runs the simulation until the node took it back (on the node it was on)
// or over (on another node), and returns an error if it refused. The
// connection keeps its id; the client then resends what it sent.
func (cl *Client) Resume(node *Node) error {
	if !cl.stateful {
		return errors.New("testkit: Resume needs a StatefulClient")
	}
	if cl.Connected() {
		cl.Drop()
	}
	old := cl.out
	p := &pipe{cl: cl, id: cl.connID, greeted: true}
	cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s resume %s on %s", cl.name, cl.connID, node.name))
	if node == cl.node && old != nil && old.window != nil && old.window.Stop() {
		// The connection still waits here for its client.
		p.conn, p.st, p.attached = old.conn, old.st, true
		cl.out = p
		old.conn.HandedOff()
		cl.c.s.add(&task{key: "c/" + cl.name, node: node.owner, label: "resume " + cl.connID, run: func() {
			if err := p.st.Attach(context.Background(), p); err != nil {
				cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s resume: %v", cl.name, err))
			}
		}}, 0)
	} else {
		_, state, attach, abort, err := fabric.Hooks.TakeOver(context.Background(), node.node, cl.hub, cl.connID, auth.Identity{UserID: cl.user})
		if err != nil {
			cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s resume refused: %v", cl.name, err))
			return err
		}
		cl.out = p
		err = cl.openStateful(node, p, &state, func(ctx context.Context, c *conn.Conn) (*fabric.Inbound, error) {
			s, err := attach(ctx, c)
			if err != nil {
				return nil, err
			}
			in, ok := s.(*fabric.Inbound)
			if !ok {
				abort("internal error")
				return nil, fmt.Errorf("testkit: unexpected session %T", s)
			}
			return in, nil
		})
		if err != nil {
			abort(err.Error())
			cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s resume failed: %v", cl.name, err))
			return err
		}
		cl.node = node
		cl.c.s.add(&task{key: "c/" + cl.name, node: node.owner, label: "resume " + cl.connID, run: func() {
			if err := p.st.Attach(context.Background(), p); err != nil {
				cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s resume: %v", cl.name, err))
			}
		}}, 0)
	}
	cl.silent, cl.pings = false, 0
	cl.stopPinger = cl.startPinger(p)
	// The client's side of the resume: Sequence, then all it sent.
	p.conn.Received()
	cl.session.Receive(&protocol.Sequence{SequenceID: 1})
	for _, m := range cl.sent {
		cl.session.Receive(m)
	}
	return nil
}
