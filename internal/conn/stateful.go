package conn

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/hubfabric/hubfabric/protocol"
)

// ErrStatefulClosed is returned by a Stateful's WriteFrame once it was
// closed.
var ErrStatefulClosed = errors.New("conn: stateful socket closed")

// Stateful is the socket of a connection that negotiated stateful
// reconnect (SignalR hub protocol version 2). It sits between the
// connection's outbound queue and whichever WebSocket currently carries
// the connection: every trackable record it writes (hub message types 1-5)
// gets the next sequence id and is kept until the client acknowledges it;
// while no socket is attached, writes only go into that buffer; Attach
// puts a new socket in place, sending Sequence and the unacknowledged
// records first, so the client gets each message once and in order. When
// the unacknowledged records would pass MaxBytes, WriteFrame waits for an
// Ack (as ASP.NET's MessageBuffer), so the connection's outbound queue
// fills and a client that never acknowledges is closed as too slow: the
// memory held for one connection is bounded by MaxBytes plus the outbound
// bound.
//
// The receive side (Received) numbers the client's trackable messages,
// drops those it already processed (a client resends its unacknowledged
// messages after a reconnect), applies the client's Acks and Sequence,
// and says which sequence id to acknowledge.
//
// The connection's writer calls WriteFrame, one call at a time; Attach,
// Detach, Received and the Close methods may be called from other
// goroutines. A stateless connection does not use it: its cost is only on
// stateful connections.
type Stateful struct {
	proto    protocol.HubProtocol
	maxBytes int

	wmu sync.Mutex // serializes socket writes: WriteFrame's and Attach's replay

	mu       sync.Mutex
	sock     Socket // nil while detached
	buf      []tracked
	bufBytes int
	nextSeq  int64 // sequence id of the next trackable record written
	greeted  bool  // the handshake answer (the first record written) went out
	closed   bool
	forward  func(rec []byte) // set by HandOver (handover.go): records go there
	space    chan struct{}    // signalled when records are acknowledged
	done     chan struct{}    // closed by Close/CloseNow

	// receive side: only the connection's reader goroutine (one at a time)
	expected  int64        // sequence id of the client's next trackable message
	processed atomic.Int64 // highest sequence id of the client handed on
	acked     atomic.Int64 // the last Ack sent (AckDue; read by HandOver)
}

type tracked struct {
	seq int64
	rec []byte
}

// NewStateful returns the stateful socket of a connection of protocol p,
// attached to sock, keeping at most maxBytes of unacknowledged records
// (one record is always kept, whatever its size).
func NewStateful(p protocol.HubProtocol, maxBytes int, sock Socket) *Stateful {
	return &Stateful{proto: p, maxBytes: max(maxBytes, 1), sock: sock, nextSeq: 1, expected: 1,
		space: make(chan struct{}, 1), done: make(chan struct{})}
}

var _ Socket = (*Stateful)(nil)

// WriteFrame buffers the frame's trackable records and writes the frame to
// the attached socket, if any. A failed write detaches that socket (and
// closes it, so its reader ends) and is not an error: the records are
// resent on the next Attach. It waits while the buffer is full, until an
// Ack makes room, the Stateful is closed (ErrStatefulClosed) or ctx ends.
func (s *Stateful) WriteFrame(ctx context.Context, frame []byte) error {
	recs := s.split(frame)
	need := 0
	for _, r := range recs {
		need += len(r)
	}
	for {
		s.wmu.Lock()
		s.mu.Lock()
		if fwd := s.forward; fwd != nil {
			s.mu.Unlock()
			for _, r := range recs {
				fwd(append([]byte(nil), r...))
			}
			s.wmu.Unlock()
			return nil
		}
		if s.closed {
			s.mu.Unlock()
			s.wmu.Unlock()
			return ErrStatefulClosed
		}
		if need == 0 || s.bufBytes == 0 || s.bufBytes+need <= s.maxBytes {
			break
		}
		s.mu.Unlock()
		s.wmu.Unlock()
		select {
		case <-s.space:
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, r := range recs {
		s.buf = append(s.buf, tracked{seq: s.nextSeq, rec: append([]byte(nil), r...)})
		s.nextSeq++
		s.bufBytes += len(r)
	}
	sock := s.sock
	s.mu.Unlock()
	defer s.wmu.Unlock()
	if sock == nil {
		return nil
	}
	if err := sock.WriteFrame(ctx, frame); err != nil {
		s.mu.Lock()
		if s.sock == sock {
			s.sock = nil
		}
		s.mu.Unlock()
		_ = sock.CloseNow()
	}
	return nil
}

// split returns the trackable records of frame (the first frame's first
// record, the handshake answer, is not one).
func (s *Stateful) split(frame []byte) [][]byte {
	s.mu.Lock()
	greeted := s.greeted
	s.greeted = true
	s.mu.Unlock()
	if !greeted {
		for i, b := range frame {
			if b == protocol.RecordSeparator {
				frame = frame[i+1:]
				break
			}
		}
	}
	var out [][]byte
	for len(frame) > 0 {
		n := recordLen(s.proto, frame)
		if n <= 0 || n > len(frame) {
			break // not a whole record: written, never tracked
		}
		if trackable(s.proto, frame[:n]) {
			out = append(out, frame[:n])
		}
		frame = frame[n:]
	}
	return out
}

// recordLen is the length of the framed record at the start of b (0 if
// none is complete).
func recordLen(p protocol.HubProtocol, b []byte) int {
	if p.TransferFormat() == protocol.TransferText {
		for i, c := range b {
			if c == protocol.RecordSeparator {
				return i + 1
			}
		}
		return 0
	}
	// MessagePack: a VarInt length prefix (at most 5 bytes), then the body.
	size, shift := 0, 0
	for i := 0; i < len(b) && i < 5; i++ {
		size |= int(b[i]&0x7f) << shift
		if b[i]&0x80 == 0 {
			return i + 1 + size
		}
		shift += 7
	}
	return 0
}

// trackable reports whether rec is a hub message of type 1-5. The node's
// own encoders put the type first ({"type":N... in JSON; a small array
// whose first item is the type in MessagePack), so that is read directly;
// anything else is parsed.
func trackable(p protocol.HubProtocol, rec []byte) bool {
	if t, ok := sniffType(p, rec); ok {
		return t >= protocol.TypeInvocation && t <= protocol.TypeCancelInvocation
	}
	msgs, _, err := p.ParseMessages(rec, 0)
	if err != nil || len(msgs) != 1 {
		return false
	}
	t := msgs[0].MessageType()
	return t >= protocol.TypeInvocation && t <= protocol.TypeCancelInvocation
}

func sniffType(p protocol.HubProtocol, rec []byte) (protocol.MessageType, bool) {
	if p.TransferFormat() == protocol.TransferText {
		const head = `{"type":`
		if len(rec) > len(head)+1 && string(rec[:len(head)]) == head {
			d := rec[len(head)]
			if d >= '1' && d <= '9' && (rec[len(head)+1] < '0' || rec[len(head)+1] > '9') {
				return protocol.MessageType(d - '0'), true
			}
		}
		return 0, false
	}
	i := 0
	for i < len(rec) && i < 5 && rec[i]&0x80 != 0 {
		i++
	}
	i++ // the prefix's last byte
	if i+1 < len(rec) && rec[i] >= 0x91 && rec[i] <= 0x9f && rec[i+1] < 0x80 {
		return protocol.MessageType(rec[i+1]), true
	}
	return 0, false
}

// Detach notes that sock no longer carries the connection (its reader
// ended): writes go only into the buffer until Attach.
func (s *Stateful) Detach(sock Socket) {
	s.mu.Lock()
	if s.sock == sock {
		s.sock = nil
	}
	s.mu.Unlock()
}

// Attach makes sock carry the connection: it writes Sequence (the first
// unacknowledged sequence id, or the next one) and every unacknowledged
// record, in order, and then lets later writes through. A failed write
// closes sock and returns the error; the records stay buffered. Attach
// after Close fails with ErrStatefulClosed.
func (s *Stateful) Attach(ctx context.Context, sock Socket) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if s.forward != nil {
		s.mu.Unlock()
		return ErrStatefulMoved
	}
	if s.closed {
		s.mu.Unlock()
		return ErrStatefulClosed
	}
	first := s.nextSeq
	if len(s.buf) > 0 {
		first = s.buf[0].seq
	}
	replay := make([][]byte, len(s.buf))
	for i, t := range s.buf {
		replay[i] = t.rec
	}
	old := s.sock
	s.sock = nil
	s.mu.Unlock()
	if old != nil && old != sock {
		_ = old.CloseNow()
	}
	frame, err := s.proto.AppendMessage(nil, &protocol.Sequence{SequenceID: first})
	if err != nil {
		return err
	}
	// Replayed records go in frames of up to maxCoalescedFrame bytes, each
	// record whole.
	for _, r := range replay {
		if len(frame) > 0 && len(frame)+len(r) > maxCoalescedFrame {
			if err := sock.WriteFrame(ctx, frame); err != nil {
				_ = sock.CloseNow()
				return err
			}
			frame = nil
		}
		frame = append(frame, r...)
	}
	if err := sock.WriteFrame(ctx, frame); err != nil {
		_ = sock.CloseNow()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrStatefulClosed
	}
	s.sock = sock
	return nil
}

// Received applies one message from the client. It reports whether the
// message goes on to the hub: Acks and Sequences stay here, and a
// trackable message whose sequence id was already processed is a
// duplicate. err is a protocol violation (a Sequence beyond what was
// received), for which the connection must be closed. Call it from the
// connection's reader only.
func (s *Stateful) Received(m protocol.Message) (pass bool, err error) {
	switch m := m.(type) {
	case *protocol.Ack:
		s.ack(m.SequenceID)
		return false, nil
	case *protocol.Sequence:
		if m.SequenceID > s.processed.Load()+1 || m.SequenceID < 1 {
			return false, errors.New("Sequence ID greater than amount of messages we've received.")
		}
		s.expected = m.SequenceID
		return false, nil
	}
	if t := m.MessageType(); t < protocol.TypeInvocation || t > protocol.TypeCancelInvocation {
		return true, nil
	}
	seq := s.expected
	s.expected++
	if seq <= s.processed.Load() {
		return false, nil // a resent message this side already has
	}
	s.processed.Store(seq)
	return true, nil
}

// AckDue returns the Ack to send the client, if it processed trackable
// messages since the last one; the caller sends it. Safe for one caller
// at a time.
func (s *Stateful) AckDue() (*protocol.Ack, bool) {
	p := s.processed.Load()
	if p <= s.acked.Load() {
		return nil, false
	}
	s.acked.Store(p)
	return &protocol.Ack{SequenceID: p}, true
}

// ack releases the records the client acknowledged.
func (s *Stateful) ack(id int64) {
	s.mu.Lock()
	n := 0
	for n < len(s.buf) && s.buf[n].seq <= id {
		s.bufBytes -= len(s.buf[n].rec)
		s.buf[n].rec = nil
		n++
	}
	if n > 0 {
		s.buf = s.buf[n:]
		if len(s.buf) == 0 {
			s.buf = nil // let the backing array go
		}
	}
	s.mu.Unlock()
	if n > 0 {
		select {
		case s.space <- struct{}{}:
		default:
		}
	}
}

// Buffered returns the count and bytes of unacknowledged records.
func (s *Stateful) Buffered() (records, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf), s.bufBytes
}

// Done is closed once the Stateful was closed.
func (s *Stateful) Done() <-chan struct{} { return s.done }

// Closed reports whether Close or CloseNow was called.
func (s *Stateful) Closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Stateful) shut() Socket {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	sock := s.sock
	s.sock = nil
	s.buf, s.bufBytes = nil, 0
	return sock
}

// Close ends the connection: the attached socket, if any, is closed
// normally, later writes and Attach fail, and a WriteFrame waiting for
// room returns. Idempotent.
func (s *Stateful) Close() error {
	if sock := s.shut(); sock != nil {
		return sock.Close()
	}
	return nil
}

// CloseNow is Close, closing the attached socket at once.
func (s *Stateful) CloseNow() error {
	if sock := s.shut(); sock != nil {
		return sock.CloseNow()
	}
	return nil
}
