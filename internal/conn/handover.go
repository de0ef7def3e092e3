package conn

import (
	"errors"
	"fmt"
	"math"

	"github.com/hubfabric/hubfabric/protocol"
)

// Hand-over: a stateful connection whose client reconnects to another
// node moves there. The old node's Stateful gives up its state (HandOver)
// and from then on passes what is still written to it on (the node
// forwards it to the new one) instead of buffering it; the new node builds
// the connection's Stateful from that state (RestoreStateful) and attaches
// the client's new socket as on one node: Sequence, then the
// unacknowledged records.

// ErrStatefulMoved is returned by Attach on a Stateful that was handed
// over to another node.
var ErrStatefulMoved = errors.New("conn: stateful connection handed over to another node")

// StatefulState is what moves with a stateful connection: the records the
// client did not acknowledge and both directions' sequence numbers.
type StatefulState struct {
	// Records are the unacknowledged trackable records, in order, each one
	// whole framed record of the connection's protocol.
	Records [][]byte
	// FirstSeq is the sequence id of Records[0], or the id of the next
	// record when there is none (at least 1).
	FirstSeq int64
	// Processed is the highest sequence id of the client's messages that
	// were handed on (what the client's next Sequence may go up to).
	Processed int64
	// Acked is the last Ack sent to the client (at most Processed).
	Acked int64
}

// HandOver takes the Stateful's state for a move to another node and puts
// it in the moved mode, in one step with respect to WriteFrame: every
// trackable record written before it is in the state, every one written
// after it goes to forward (in order, one call per record, on the
// writer's goroutine; the slice is the caller's to keep) and is neither
// written nor buffered. The attached socket, if any, is closed; Attach
// fails with ErrStatefulMoved and Done is closed. A second HandOver, or
// one after Close, returns ok false.
func (s *Stateful) HandOver(forward func(rec []byte)) (state StatefulState, ok bool) {
	s.wmu.Lock()
	s.mu.Lock()
	if s.closed || s.forward != nil {
		s.mu.Unlock()
		s.wmu.Unlock()
		return StatefulState{}, false
	}
	state = StatefulState{FirstSeq: s.nextSeq, Processed: s.processed.Load(), Acked: s.acked.Load()}
	if len(s.buf) > 0 {
		state.FirstSeq = s.buf[0].seq
	}
	state.Records = make([][]byte, len(s.buf))
	for i, t := range s.buf {
		state.Records[i] = t.rec
	}
	s.forward = forward
	s.greeted = true
	s.buf, s.bufBytes = nil, 0
	sock := s.sock
	s.sock = nil
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.wmu.Unlock()
	if sock != nil {
		_ = sock.CloseNow()
	}
	return state, true
}

// Moved reports whether the Stateful was handed over.
func (s *Stateful) Moved() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.forward != nil
}

// RestoreStateful returns the stateful socket of a connection of protocol
// p that moved here with state, detached (Attach puts the client's socket
// in place), keeping at most maxBytes of unacknowledged records beyond
// those it starts with. It refuses a state that is not one: a record that
// is not exactly one whole trackable record of p, sequence ids below 1 or
// that would overflow, an Ack beyond what was processed.
func RestoreStateful(p protocol.HubProtocol, maxBytes int, state StatefulState) (*Stateful, error) {
	switch {
	case state.FirstSeq < 1:
		return nil, fmt.Errorf("conn: restoring a stateful connection: first sequence id %d is below 1", state.FirstSeq)
	case state.FirstSeq > math.MaxInt64-int64(len(state.Records))-1:
		return nil, fmt.Errorf("conn: restoring a stateful connection: sequence id %d overflows", state.FirstSeq)
	case state.Processed < 0 || state.Processed == math.MaxInt64:
		return nil, fmt.Errorf("conn: restoring a stateful connection: processed sequence id %d is out of range", state.Processed)
	case state.Acked < 0 || state.Acked > state.Processed:
		return nil, fmt.Errorf("conn: restoring a stateful connection: acknowledged id %d is not within 0..%d (processed)", state.Acked, state.Processed)
	}
	s := NewStateful(p, maxBytes, nil)
	s.greeted = true // the handshake answer went out on the old node
	s.nextSeq = state.FirstSeq
	for i, r := range state.Records {
		if len(r) == 0 || recordLen(p, r) != len(r) || !trackable(p, r) {
			return nil, fmt.Errorf("conn: restoring a stateful connection: record %d (%d bytes) is not one whole hub message of type 1-5 in %s", i, len(r), p.Name())
		}
		s.buf = append(s.buf, tracked{seq: s.nextSeq, rec: append([]byte(nil), r...)})
		s.nextSeq++
		s.bufBytes += len(r)
	}
	s.processed.Store(state.Processed)
	s.expected = state.Processed + 1
	s.acked.Store(state.Acked)
	return s, nil
}

// ErrNotStateful is returned by Conn.HandOver for a connection that did
// not negotiate stateful reconnect.
var ErrNotStateful = errors.New("conn: the connection is not stateful")

// HandOver gives up the connection for a move to another node, and calls
// done with its state (or why it cannot). In one step with respect to
// Enqueue, every record queued before it is in the state (the
// unacknowledged records of the Stateful, then the trackable records still
// queued), and every record queued after it goes to forward, on the
// enqueuing goroutine, in each caller's order, and is never written here.
// The client's socket is closed; its reader ends and the transport calls
// EndMoved. It never blocks: when a frame is being written, done runs on
// the writer's goroutine once the frame is out; else before HandOver
// returns. It fails on a connection that is not stateful, is closing, or
// was handed over already.
func (c *Conn) HandOver(forward func(rec []byte), done func(StatefulState, error)) {
	st, ok := c.out.sock.(*Stateful)
	if !ok {
		done(StatefulState{}, ErrNotStateful)
		return
	}
	o := c.out
	o.mu.Lock()
	if o.closing || o.forward != nil || o.paused || o.held {
		o.mu.Unlock()
		done(StatefulState{}, errors.New("conn: the connection is closing or already handed over"))
		return
	}
	o.paused = true
	if o.writing {
		// The writer finishes its frame first: all it took is then in the
		// Stateful. It goes on from there.
		o.idle = func() { c.finishHandOver(st, forward, done) }
		o.mu.Unlock()
		return
	}
	o.mu.Unlock()
	c.finishHandOver(st, forward, done)
}

// finishHandOver is HandOver once the writer is idle.
func (c *Conn) finishHandOver(st *Stateful, forward func(rec []byte), done func(StatefulState, error)) {
	o := c.out
	o.mu.Lock()
	queue := o.queue
	o.dropQueueLocked()
	o.forward = forward
	o.mu.Unlock()
	state, ok := st.HandOver(func([]byte) {}) // nothing writes to it any more
	if !ok {
		done(StatefulState{}, ErrStatefulClosed)
		return
	}
	for _, rec := range queue {
		if len(rec) > 0 && recordLen(c.opts.Protocol, rec) == len(rec) && trackable(c.opts.Protocol, rec) {
			state.Records = append(state.Records, rec)
		}
	}
	done(state, nil)
}

// EndMoved ends a connection that was handed over (its reader stopped
// because HandOver closed the socket): the heartbeat stops and the
// session is not told, since the connection goes on on another node.
// Records queued later still go to HandOver's forward. Idempotent.
func (c *Conn) EndMoved() {
	c.endOnce.Do(func() {
		c.hb.stop()
		c.out.endMoved()
	})
}

// endMoved marks the handed-over outbound closed and its socket done.
func (o *outbound) endMoved() {
	o.mu.Lock()
	if o.closing {
		o.mu.Unlock()
		return
	}
	o.closing = true
	o.lastTaken = true
	o.mu.Unlock()
	_ = o.sock.CloseNow()
	close(o.done)
}
