package testkit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/protocol"
)

// Client is a simulated SignalR client: it talks to a node's actors through
// the real protocol encoders and parsers, without a socket, and records
// everything it receives. Use it from the test goroutine only.
type Client struct {
	c    *Cluster
	name string
	user string
	hub  string
	node *Node

	connID  string
	attempt int
	in      *fabric.Inbound
	out     *outlet

	calls    map[string]*Call
	nextCall int
	lastCall *Call
	// Received lists the invocations the client got, in order.
	Received []Received
	// Closes lists the Close messages the client got (or "dropped" notes).
	Closes []string

	// keep-alive: see heartbeat.go.
	lastSent      time.Duration // virtual time the client last sent something
	silent        bool
	pings         int
	stopHeartbeat func()

	// slow client: records wait in backlog and drain one per slowEvery.
	slowEvery  time.Duration
	maxBacklog int
	backlog    [][]byte
	backlogLen int
	draining   bool
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

// outlet is the server side of a simulated connection (actors.Outlet).
type outlet struct {
	cl        *Client
	id        string
	closed    bool
	lastWrite time.Duration // virtual time of the last record queued
}

func (o *outlet) ID() string                     { return o.id }
func (o *outlet) Protocol() protocol.HubProtocol { return protocol.JSON }

func (o *outlet) Enqueue(rec []byte) error {
	if o.closed {
		return fmt.Errorf("testkit: connection %s closed", o.id)
	}
	o.lastWrite = o.cl.c.s.Now()
	o.cl.c.s.enqueueDelivery(o.cl, rec)
	return nil
}

func (o *outlet) Send(m protocol.Message) error {
	rec, err := protocol.JSON.AppendMessage(nil, m)
	if err != nil {
		return err
	}
	return o.Enqueue(rec)
}

// Close sends a Close message and ends the connection; the "reader" then
// reports the end to the connection actor, as transport does.
func (o *outlet) Close(errMsg string, allowReconnect bool) {
	if o.closed {
		return
	}
	_ = o.Send(&protocol.Close{Error: errMsg, AllowReconnect: allowReconnect})
	o.closed = true
	if o.cl.out == o && o.cl.stopHeartbeat != nil {
		o.cl.stopHeartbeat()
	}
	cl, in, owner := o.cl, o.cl.in, o.cl.node.owner
	cl.c.s.add(&task{key: "c/" + cl.name, node: owner, label: "reader-end " + o.id, run: func() {
		if in != nil {
			in.Closed(nil)
		}
	}}, 0)
}

// Name is the client's name in the scenario.
func (cl *Client) Name() string { return cl.name }

// ConnID is the current connection id ("" before Connect).
func (cl *Client) ConnID() string { return cl.connID }

// Node is the node the client is connected to.
func (cl *Client) Node() *Node { return cl.node }

// Connected reports whether the client has a live connection.
func (cl *Client) Connected() bool { return cl.out != nil && !cl.out.closed }

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
	cl.out = &outlet{cl: cl, id: cl.connID}
	cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s connect as %s user=%q to %s", cl.name, cl.connID, cl.user, node.name))
	in, err := fabric.Hooks.Attach(context.Background(), node.node, cl.hub, cl.connID, auth.Identity{UserID: cl.user}, cl.out)
	if err != nil {
		cl.out.closed = true
		cl.c.trace.add(cl.c.s.Now(), "client", fmt.Sprintf("%s connect failed: %v", cl.name, err))
		return err
	}
	cl.in = in
	cl.silent, cl.pings, cl.lastSent = false, 0, cl.c.s.Now()
	cl.out.lastWrite = cl.c.s.Now()
	cl.stopHeartbeat = cl.startHeartbeats()
	cl.c.onConnect(cl)
	return nil
}

// Drop ends the connection abruptly, as a lost socket does.
func (cl *Client) Drop() {
	if !cl.Connected() {
		return
	}
	cl.c.trace.add(cl.c.s.Now(), "fault", fmt.Sprintf("%s dropped (%s)", cl.name, cl.connID))
	cl.out.closed = true
	if cl.stopHeartbeat != nil {
		cl.stopHeartbeat()
	}
	cl.c.onClosed(cl)
	in := cl.in
	cl.c.s.add(&task{key: "c/" + cl.name, node: cl.node.owner, label: "reader-end " + cl.connID, run: func() {
		in.Closed(fmt.Errorf("testkit: connection dropped"))
	}}, 0)
}

// Slow makes the client read one record per every of virtual time; past
// maxBacklog bytes waiting, the server closes it as too slow (as the real
// transport does with MaxOutboundBytes).
func (cl *Client) Slow(every time.Duration, maxBacklog int) {
	cl.slowEvery, cl.maxBacklog = every, maxBacklog
	cl.c.trace.add(cl.c.s.Now(), "fault", fmt.Sprintf("%s slow: one record per %s, closed past %d bytes", cl.name, every, maxBacklog))
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
	cl.lastSent = cl.c.s.Now()
	cl.in.Receive(msgs[0])
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

// commit takes a record delivered to the client at the end of a step.
func (cl *Client) commit(at time.Duration, rec []byte) {
	if cl.slowEvery > 0 {
		if cl.backlogLen+len(rec) > cl.maxBacklog && cl.Connected() {
			cl.out.Close(fmt.Sprintf("Connection closed: the client is too slow; more than %d bytes were waiting to be sent.", cl.maxBacklog), true)
			cl.c.onClosed(cl)
			return
		}
		cl.backlog = append(cl.backlog, rec)
		cl.backlogLen += len(rec)
		if !cl.draining {
			cl.draining = true
			cl.c.s.add(&task{key: "c/" + cl.name, label: "drain " + cl.name, run: cl.drain}, cl.slowEvery)
		}
		return
	}
	cl.read(at, rec)
}

func (cl *Client) drain() {
	if len(cl.backlog) == 0 {
		cl.draining = false
		return
	}
	rec := cl.backlog[0]
	cl.backlog = cl.backlog[1:]
	cl.backlogLen -= len(rec)
	cl.read(cl.c.s.Now(), rec)
	cl.c.s.add(&task{key: "c/" + cl.name, label: "drain " + cl.name, run: cl.drain}, cl.slowEvery)
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
