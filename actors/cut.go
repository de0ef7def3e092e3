package actors

// A stateful connection that moves from one node (the old owner) to
// another (the new owner) is cut over route by route: its connection,
// user and group channels and the hub's all channel. The new owner
// subscribes to each; then the old owner publishes a marker on each. One
// channel's messages reach every subscriber in one order
// (backplane.ChannelOrder), so the marker splits them: what came before it
// the old owner delivers (and forwards to the new one), what comes after it
// the new owner delivers. A node's own sends are not seen by the node in
// that order unless they come back from the backplane (their echo), so:
//
//   - the old owner stops delivering its own sends at the moment it
//     publishes the marker (they go out in the same order as the marker),
//     and other nodes' sends once the marker came back;
//   - the new owner delivers other nodes' sends once the marker arrived,
//     and its own sends either at once (after the marker, with no echo
//     pending) or when their echo comes back, so that they keep their
//     place among the others.
//
// cut is that decision for one route of one moving connection on one
// node. Only the actor that fans out the route (the hub, or the group's
// actor) touches it.
type cut struct {
	in bool // the new owner's side
	// listening: new owner: its subscription to the route is in effect.
	// Its own sends before that reach the old owner ahead of the marker
	// (the new owner tells it to publish markers only after), so the old
	// owner delivers them, and no echo of theirs is awaited: it may never
	// come.
	listening bool
	marked    bool // old owner: the marker is published
	seen      bool // the marker arrived (old owner: came back)
	echoes    int  // new owner: own sends on this route whose echo is awaited
	// firstEcho: new owner: the echo number (send.seq) of the first send
	// whose echo is awaited. Echoes of earlier sends come back too (a send
	// decided before listening may be published after), and must not be
	// taken for awaited ones: one channel's echoes return in send order, so
	// every echo numbered from firstEcho on is awaited.
	firstEcho uint64
	counted   bool // new owner: done was reported to the hub actor
}

// own decides a send made on this node: whether the connection gets it
// now, and whether it waits for its echo instead (the send must then be
// published even when no other node listens).
func (c *cut) own() (deliver, echo bool) {
	if !c.in {
		return !c.marked, false
	}
	if !c.listening {
		return false, false
	}
	if c.seen && c.echoes == 0 {
		return true, false
	}
	c.echoes++
	return false, true
}

// arrived decides a send another node published.
func (c *cut) arrived() bool {
	if c.in {
		return c.seen
	}
	return !c.seen
}

// echoed decides the echo of a send made on this node, numbered seq.
// Echoes nobody waits for (the old owner's, or those of sends made before
// the route was listening here) are not delivered.
func (c *cut) echoed(seq uint64) bool {
	if !c.in || c.echoes == 0 || seq < c.firstEcho {
		return false
	}
	c.echoes--
	return c.seen
}

// done reports, on the new owner, that the route is cut over: the marker
// arrived and no echo is awaited, so from now on the connection gets the
// route's sends as any other member.
func (c *cut) done() bool { return c.in && c.seen && c.echoes == 0 }

// take applies c (nil: the connection does not move) to s. A send made on
// this node whose echo c awaits is published even when no other node
// listens, and numbered from last (the fanning-out actor's counter) unless
// another cut numbered it already.
func (c *cut) take(s *send, last *uint64) bool {
	switch {
	case c == nil:
		return !s.echo
	case s.echo:
		return c.echoed(s.seq)
	case s.arrived:
		return c.arrived()
	}
	deliver, echo := c.own()
	if echo {
		s.force = true
		if s.seq == 0 {
			*last++
			s.seq = *last
		}
		if c.firstEcho == 0 {
			c.firstEcho = s.seq
		}
	}
	return deliver
}

// connCuts are the cuts of a moving connection's routes that the hub actor
// fans out itself; its groups' cuts live in their actors.
type connCuts struct{ all, conn, user cut }

func (cc *connCuts) of(k RouteKind) *cut {
	if cc == nil {
		return nil
	}
	switch k {
	case RouteAll:
		return &cc.all
	case RouteConnection:
		return &cc.conn
	case RouteUser:
		return &cc.user
	}
	return nil
}
