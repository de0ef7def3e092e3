package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// Client is a simulated SignalR client: it talks to a node through the real
// connection code (outbound queue, heartbeat) over an in-memory pipe and
// the real protocol encoders and parsers, and records everything it
// receives. Use it from the test goroutine only.
type Client struct {
	c    *Cluster
	name string
	user string
	hub  string
	node *Node

	connID  string
	attempt int
	in      *fabric.Inbound
	session clientSession // where the client's messages go: in, or a stateful session before it
	out     *pipe         // the current connection's socket

	// stateful reconnect (stateful.go)
	stateful bool
	seqNext  int64              // sequence id of the next trackable message on this socket
	seqGot   int64              // sequence id of the last one read
	sent     []protocol.Message // what the client sent on its connection, resent after a reconnect

	calls    map[string]*Call
	nextCall int
	lastCall *Call
	// Received lists the invocations the client got, in order.
	Received []Received
	// Closes lists the Close messages the client got (or "dropped" notes).
	Closes []string

	// keep-alive: see heartbeat.go.
	silent     bool
	pings      int
	stopPinger func()

	// slow client: it reads one frame per slowEvery (the node's writer
	// waits that long on each frame).
	slowEvery time.Duration
}

// clientSession is where a client's parsed messages go.
type clientSession interface {
	Receive(m protocol.Message)
	Closed(err error)
}

// Received is one invocation a client got.
type Received struct {
	At     time.Duration // virtual time
	Step   uint64        // scheduler step (a logical clock shared by the cluster)
	ConnID string
	Target string
	Args   []string // raw JSON arguments
}

// Call is one invocation a client made.
type Call struct {
	ID     string
	Method string
	Args   []any
	Issued uint64 // step when the client sent it
	// Done is set when the Completion arrived; Error and Result are from it.
	Done     bool
	DoneStep uint64
	Error    string
	Result   string
	client   *Client
	onDone   func(*Call)
	issuedAt uint64 // checker clock
	doneAt   uint64
}

// pipe is the client's end of a simulated connection: the conn.Socket
// that the node's real connection code (internal/conn: outbound queue,
// coalescing, greeting hold, overflow, heartbeat) writes to, in the style of
// coder/websocket's wstest.Pipe, but frame by frame on the scheduler. A
// frame reaches the client at the end of the step that wrote it.
type pipe struct {
	cl       *Client
	id       string
	conn     *conn.Conn
	attached bool // the hub accepted the connection: End reaches a session
	greeted  bool // the handshake answer was read
	closed   bool // the node closed the socket, or the client lost it
	dropped  bool // the client lost it: writes fail
	// stateful reconnect (stateful.go)
	st     *conn.Stateful
	window *bgTimer // the node waits this long for the client after a drop
}

var errDropped = errors.New("testkit: connection dropped")

// WriteFrame implements conn.Socket. A slow client's frames take slowEvery
// of virtual time each, during which the node's writer waits and later
// records queue up (and coalesce, or overflow) in the real outbound queue.
func (p *pipe) WriteFrame(_ context.Context, frame []byte) error {
	if p.dropped {
		return errDropped
	}
	if every := p.cl.slowEvery; every > 0 {
		if err := p.cl.c.s.sleep(every); err != nil {
			return err
		}
		if p.dropped || p.closed { // cut off meanwhile (CloseNow after the close grace)
			return errDropped
		}
	}
	p.cl.c.s.enqueueDelivery(p.cl, p, bytes.Clone(frame))
	return nil
}

// Close implements conn.Socket: the socket ends, and the node's reader
// for it reports the end to the connection (conn.End), as the WebSocket
// transport's read loop does.
func (p *pipe) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	p.cl.stopPingerOf(p)
	// Also when it closes while the hub is still attaching it: the reader
	// ends then too, once Open has returned (attached says whether it has a
	// session to tell).
	cl := p.cl
	cl.c.s.add(&task{key: "c/" + cl.name, node: cl.node.owner, label: "reader-end " + p.id, run: func() {
		switch {
		case !p.attached:
		case p.st != nil:
			cl.readerEnd(p, nil)
		default:
			p.conn.End(nil)
		}
	}}, 0)
	return nil
}

// CloseNow implements conn.Socket.
func (p *pipe) CloseNow() error { return p.Close() }

// connRuntime is the runtime of a simulated connection's code: its writer
// runs as a simulated goroutine of the node, and its timers (keep-alive,
// client timeout, the close grace) are background timers of the node on
// the virtual clock, which run as time passes but do not keep Settle going.
type connRuntime struct {
	nodeRuntime
	id string
}

func (r *connRuntime) AfterFunc(d time.Duration, fn func()) seam.Timer {
	return r.s.afterBackground(r.node, "h/"+r.id, "conn timer "+r.id, d, fn)
}

// Name is the client's name in the scenario.
func (cl *Client) Name() string { return cl.name }

// ConnID is the current connection id ("" before Connect).
func (cl *Client) ConnID() string { return cl.connID }

// Node is the node the client is connected to.
func (cl *Client) Node() *Node { return cl.node }

// Connected reports whether the client has a live connection.
func (cl *Client) Connected() bool { return cl.out != nil && !cl.out.closed }

func (cl *Client) stopPingerOf(p *pipe) {
	if cl.out == p && cl.stopPinger != nil {
		cl.stopPinger()
		cl.stopPinger = nil
	}
}

// Connect opens a new connection (the first, or a reconnect) to node, runs
// the simulation until the hub accepted it, and returns an error if it
// refused. The connection id is the client's name and attempt number.
func (cl *Client) Connect(node *Node) error {
	if cl.Connected() {
		cl.Drop()
	}
	cl.attempt++
	cl.node = node
	cl.connID = cl.name + strconv.Itoa(cl.attempt)
	p := &pipe{cl: cl, id: cl.connID}
	cl.out = p
	cl.silent, cl.pings = false, 0
	cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s connect as %s user=%q to %s", cl.name, cl.connID, cl.user, node.name))
	attach := func(ctx context.Context, c *conn.Conn) (*fabric.Inbound, error) {
		in, err := fabric.Hooks.Attach(ctx, node.node, cl.hub, cl.connID, auth.Identity{UserID: cl.user}, c)
		if err != nil {
			return nil, err
		}
		cl.in, cl.session = in, in
		return in, nil
	}
	var err error
	if cl.stateful {
		cl.seqNext, cl.seqGot, cl.sent = 1, 0, nil
		err = cl.openStateful(node, p, nil, attach)
	} else {
		opts := fabric.Hooks.ConnOptions(node.node, cl.connID, protocol.JSON)
		opts.Runtime = &connRuntime{nodeRuntime: nodeRuntime{s: cl.c.s, node: node.owner}, id: cl.connID}
		opts.Logger = nil
		var c *conn.Conn
		c, err = conn.Open(context.Background(), p, opts, func(ctx context.Context, c *conn.Conn) (conn.Session, error) { return attach(ctx, c) })
		p.conn = c
		if err == nil {
			p.attached = true
		}
	}
	if err != nil {
		p.closed = true
		cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s connect failed: %v", cl.name, err))
		return err
	}
	p.conn.Received() // the handshake: the client timeout counts from here
	cl.stopPinger = cl.startPinger(p)
	cl.c.onConnect(cl)
	return nil
}

// Drop ends the connection abruptly, as a lost socket does: the node's
// writes to it fail and its reader reports the loss.
func (cl *Client) Drop() {
	if !cl.Connected() {
		return
	}
	p := cl.out
	cl.c.trace.add(cl.c.s.Now(), "fault", fmt.Sprintf("%s dropped (%s)", cl.name, cl.connID))
	p.dropped = true
	cl.stopPingerOf(p)
	p.closed = true
	if p.st != nil {
		// Stateful: the connection waits for its client (Resume).
		cl.c.s.add(&task{key: "c/" + cl.name, node: cl.node.owner, label: "reader-end " + cl.connID, run: func() { cl.readerEnd(p, errDropped) }}, 0)
		return
	}
	cl.c.onClosed(cl)
	cl.c.s.add(&task{key: "c/" + cl.name, node: cl.node.owner, label: "reader-end " + cl.connID, run: func() { p.conn.End(errDropped) }}, 0)
}

// Slow makes the client read one frame per every of virtual time (0: as
// fast as frames come). Meanwhile the node's real outbound queue holds what
// it cannot write, coalescing records into larger frames, and closes the
// client as too slow once more than the node's MaxOutboundBytes wait.
func (cl *Client) Slow(every time.Duration) {
	cl.slowEvery = every
	cl.c.trace.add(cl.c.s.Now(), "fault", fmt.Sprintf("%s slow: one frame per %s", cl.name, every))
}

// Invoke sends an invocation that expects a completion.
func (cl *Client) Invoke(method string, args ...any) *Call {
	cl.nextCall++
	call := &Call{ID: strconv.Itoa(cl.nextCall), Method: method, Args: args, client: cl}
	cl.lastCall = call
	if !cl.Connected() {
		call.Done, call.Error = true, "not connected"
		return call
	}
	inv := &protocol.Invocation{InvocationID: call.ID, Target: method, Arguments: args}
	rec, err := protocol.JSON.AppendMessage(nil, inv)
	if err != nil {
		call.Done, call.Error = true, err.Error()
		return call
	}
	// What the transport's reader does: parse the frame, hand it on.
	msgs, _, err := protocol.JSON.ParseMessages(rec, 1<<20)
	if err != nil || len(msgs) != 1 {
		call.Done, call.Error = true, fmt.Sprintf("parse: %v", err)
		return call
	}
	call.Issued = cl.c.s.Steps()
	call.issuedAt = cl.c.chk.now()
	if cl.calls == nil {
		cl.calls = map[string]*Call{}
	}
	cl.calls[cl.connID+"/"+call.ID] = call
	cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s(%s) invoke #%s %s", cl.name, cl.connID, call.ID, describeMessage(msgs[0])))
	cl.out.conn.Received() // what the transport's reader does for every frame
	if cl.stateful {
		cl.sent = append(cl.sent, msgs[0])
	}
	cl.session.Receive(msgs[0])
	return call
}

// Wait runs the simulation until the call completed (or nothing is left).
func (c *Call) Wait() *Call {
	c.client.c.s.RunUntil(func() bool { return c.Done }, 10_000_000)
	return c
}

// Err is the completion's error text as an error, or nil.
func (c *Call) Err() error {
	if !c.Done {
		return fmt.Errorf("call %s #%s not completed", c.Method, c.ID)
	}
	if c.Error != "" {
		return fmt.Errorf("%s", c.Error)
	}
	return nil
}

// commit takes a frame delivered to the client at the end of a step. The
// first frame of a connection starts with the handshake answer.
func (cl *Client) commit(at time.Duration, p *pipe, frame []byte) {
	if p != cl.out || !p.attached {
		return // a frame of an earlier connection, or a refusal Connect already returned
	}
	if !p.greeted {
		resp, n, err := protocol.ParseHandshakeResponse(frame)
		if err != nil {
			cl.c.violation(fmt.Sprintf("%s got no handshake answer first: %q: %v", cl.name, frame, err))
			return
		}
		if resp.Error != "" {
			cl.c.violation(fmt.Sprintf("%s: handshake refused after the hub accepted it: %s", cl.name, resp.Error))
			return
		}
		p.greeted = true
		if frame = frame[n:]; len(frame) == 0 {
			return
		}
	}
	cl.read(at, frame)
}

// read parses a record with the real protocol and records it.
func (cl *Client) read(at time.Duration, rec []byte) {
	msgs, _, err := protocol.JSON.ParseMessages(rec, 1<<20)
	if err != nil {
		cl.c.violation(fmt.Sprintf("%s got an unparsable record %q: %v", cl.name, rec, err))
		return
	}
	step := cl.c.s.Steps()
	for _, m := range msgs {
		if cl.stateful {
			switch v := m.(type) {
			case *protocol.Sequence:
				cl.seqNext = v.SequenceID
				continue
			case *protocol.Ack:
				continue
			}
			if t := m.MessageType(); t >= protocol.TypeInvocation && t <= protocol.TypeCancelInvocation {
				seq := cl.seqNext
				cl.seqNext++
				if seq <= cl.seqGot {
					continue // resent after a reconnect: the client has it
				}
				cl.seqGot = seq
			}
		}
		cl.c.trace.add(at, "recv", fmt.Sprintf("%s(%s) <- %s", cl.name, cl.connID, describeMessage(m)))
		switch v := m.(type) {
		case *protocol.Invocation:
			r := Received{At: at, Step: step, ConnID: cl.connID, Target: v.Target}
			for _, a := range v.Arguments {
				raw, _ := a.(protocol.RawValue)
				r.Args = append(r.Args, string(raw))
			}
			cl.Received = append(cl.Received, r)
			cl.c.onReceive(cl, r)
		case *protocol.Completion:
			for key, call := range cl.calls {
				if key == cl.connID+"/"+v.InvocationID && !call.Done {
					call.Done, call.DoneStep, call.Error = true, step, v.Error
					call.doneAt = cl.c.chk.now()
					if v.HasResult {
						call.Result = rawArgs([]any{v.Result})
					}
					delete(cl.calls, key)
					if call.onDone != nil {
						call.onDone(call)
					}
				}
			}
		case *protocol.Ping:
			cl.pings++
		case *protocol.Close:
			cl.Closes = append(cl.Closes, v.Error)
			cl.c.onClosed(cl)
		}
	}
}
