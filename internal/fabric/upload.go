package fabric

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/protocol"
)

// Upload is a client-to-server stream: the items the client sends under one
// stream id, ended by the client's Completion. The connection's reader
// pushes (waiting while the buffer is full, which slows the client down);
// the hub method reads with Next.
type Upload struct {
	ID string

	mu     sync.Mutex
	items  []protocol.RawValue
	done   bool
	err    error
	max    int
	notify chan struct{} // an item or the end is available
	space  chan struct{} // room in the buffer, or the end
}

func newUpload(id string, max int) *Upload {
	return &Upload{ID: id, max: max, notify: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push adds an item, waiting while the buffer is full until the reader
// takes one, the stream ends (finish) or gone is closed.
func (u *Upload) push(gone <-chan struct{}, v protocol.RawValue) {
	for {
		u.mu.Lock()
		if u.done {
			u.mu.Unlock()
			return
		}
		if len(u.items) < u.max {
			u.items = append(u.items, v)
			u.mu.Unlock()
			signal(u.notify)
			return
		}
		u.mu.Unlock()
		select {
		case <-u.space:
		case <-gone:
			return
		}
	}
}

// finish ends the stream; err is nil for a normal end. Only the first call
// counts.
func (u *Upload) finish(err error) {
	u.mu.Lock()
	if !u.done {
		u.done, u.err = true, err
	}
	u.mu.Unlock()
	signal(u.notify)
	signal(u.space)
}

// Next returns the next item; ok is false when the stream ended (see Err)
// or ctx ended. For one reader at a time.
func (u *Upload) Next(ctx context.Context) (v protocol.RawValue, ok bool) {
	for {
		u.mu.Lock()
		if len(u.items) > 0 {
			v = u.items[0]
			u.items[0] = nil
			u.items = u.items[1:]
			u.mu.Unlock()
			signal(u.space)
			return v, true
		}
		done := u.done
		u.mu.Unlock()
		if done {
			return nil, false
		}
		select {
		case <-u.notify:
		case <-ctx.Done():
			u.finish(ctx.Err())
			return nil, false
		}
	}
}

// Err is the client's error for the stream, or the context error that
// ended it, once Next returned false.
func (u *Upload) Err() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// Uploads maps a connection's open stream ids to their Uploads. The
// reader goroutine creates and feeds them (through Inbound); the connection
// actor removes them when their call ends. Safe for concurrent use: one
// small lock per connection.
type Uploads struct {
	max     int // items buffered per stream
	maxOpen int // streams registered at once
	mu      sync.Mutex
	byID    map[string]*Upload // made on the first stream: most connections never upload
	closed  bool
}

// NewUploads returns the registry of one connection; each stream buffers
// up to max items, and at most maxOpen streams are open at once (those of
// calls still waiting to start included).
func NewUploads(max, maxOpen int) *Uploads {
	return &Uploads{max: max, maxOpen: maxOpen}
}

// create registers the upload streams an invocation declares. When they
// would pass the open-stream bound it registers none (their items are
// dropped) and returns them ended, with ok false.
func (r *Uploads) create(ids []string) (ups []*Upload, open int, ok bool) {
	ups = make([]*Upload, len(ids))
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byID)+len(ids) > r.maxOpen {
		for i, id := range ids {
			ups[i] = newUpload(id, r.max)
			ups[i].finish(errTooManyStreams)
		}
		return ups, len(r.byID), false
	}
	for i, id := range ids {
		u := newUpload(id, r.max)
		if r.closed {
			u.finish(errConnectionClosed)
		} else {
			if old := r.byID[id]; old != nil {
				old.finish(errStreamIDReused)
			}
			if r.byID == nil {
				r.byID = make(map[string]*Upload)
			}
			r.byID[id] = u
		}
		ups[i] = u
	}
	return ups, len(r.byID), true
}

func (r *Uploads) get(id string) *Upload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id]
}

// Remove ends u (if it is still open) and forgets it.
func (r *Uploads) Remove(u *Upload) {
	u.finish(nil)
	r.mu.Lock()
	if r.byID[u.ID] == u {
		delete(r.byID, u.ID)
	}
	r.mu.Unlock()
}

// CloseAll ends every open stream with err; streams created afterwards
// start ended.
func (r *Uploads) CloseAll(err error) {
	r.mu.Lock()
	r.closed = true
	all := r.byID
	r.byID = nil
	r.mu.Unlock()
	for _, u := range all {
		u.finish(err)
	}
}

// Inbound receives a connection's parsed client messages on its reader
// goroutine. Upload stream items and ends go straight to their Upload (so a
// full stream buffer holds up the reader, not the actor); everything else
// goes to the connection actor, in order. Invocations first take room in
// the connection's Pending bound, so a client that invokes faster than its
// calls run is read no faster than they start.
type Inbound struct {
	root    *actor.RootContext
	pid     *actor.PID
	uploads *Uploads
	pending *Pending
	gone    <-chan struct{} // the connection's socket side ended
}

// NewInbound returns the Inbound of the connection actor pid. gone is
// closed when the connection's socket side ends (Outlet.Done); it ends
// any wait of the reader.
func NewInbound(root *actor.RootContext, pid *actor.PID, uploads *Uploads, pending *Pending, gone <-chan struct{}) *Inbound {
	return &Inbound{root: root, pid: pid, uploads: uploads, pending: pending, gone: gone}
}

// Receive handles one message from the client. It may wait: while the
// connection's pending invocations are at their bound, and while an upload
// stream's buffer is full. Not safe for concurrent use: one reader calls it.
func (in *Inbound) Receive(m protocol.Message) {
	switch msg := m.(type) {
	case *protocol.StreamItem:
		if u := in.uploads.get(msg.InvocationID); u != nil {
			raw, _ := msg.Item.(protocol.RawValue)
			u.push(in.gone, raw)
		}
		// Items of unknown or finished streams are dropped, as in ASP.NET.
		return
	case *protocol.Completion:
		if u := in.uploads.get(msg.InvocationID); u != nil {
			var err error
			if msg.Error != "" {
				err = &StreamError{Message: msg.Error}
			}
			u.finish(err)
			return
		}
		// Not an upload's end: the answer to a client invocation
		// (client results), for the connection actor.
	case *protocol.Invocation:
		in.invocation(m, msg.StreamIDs, invocationSize(msg.Target, msg.InvocationID, msg.Arguments, msg.StreamIDs))
		return
	case *protocol.StreamInvocation:
		in.invocation(m, msg.StreamIDs, invocationSize(msg.Target, msg.InvocationID, msg.Arguments, msg.StreamIDs))
		return
	}
	in.root.Send(in.pid, &ClientMessage{Message: m})
}

func (in *Inbound) invocation(m protocol.Message, streamIDs []string, size int) {
	if !in.pending.Acquire(size, in.gone) {
		return // the connection is over: nothing will run it
	}
	cm := &ClientMessage{Message: m, Size: size}
	if len(streamIDs) > 0 {
		// Registered now, so items the client sends while the call waits
		// are kept; bounded now, so a waiting call cannot buffer without
		// limit either.
		var open int
		var ok bool
		if cm.Uploads, open, ok = in.uploads.create(streamIDs); !ok {
			_, target := InvocationOf(m)
			cm.Refused = fmt.Sprintf("Failed to invoke '%s': %d upload streams are open and %d more would pass the limit of %d (MaxStreamsPerConnection).",
				target, open, len(streamIDs), in.uploads.maxOpen)
		}
	}
	in.root.Send(in.pid, cm)
}

// InvocationOf returns the invocation id and target of an Invocation or a
// StreamInvocation, and "" for any other message.
func InvocationOf(m protocol.Message) (id, target string) {
	switch m := m.(type) {
	case *protocol.Invocation:
		return m.InvocationID, m.Target
	case *protocol.StreamInvocation:
		return m.InvocationID, m.Target
	}
	return "", ""
}

// invocationSize is what an invocation holds while it waits: its strings
// and raw arguments, plus a fixed overhead for the message itself.
func invocationSize(target, id string, args []any, streamIDs []string) int {
	n := 64 + len(target) + len(id)
	for _, a := range args {
		if raw, ok := a.(protocol.RawValue); ok {
			n += len(raw)
		}
	}
	for _, s := range streamIDs {
		n += len(s)
	}
	return n
}

// Pending bounds the invocations of one connection that were read from its
// socket but have not started, by count and by bytes. The reader Acquires
// before handing one to the connection actor, which Releases it when the
// call starts or is refused, and Closes it when the connection ends. Safe
// for concurrent use; one goroutine (the reader) Acquires.
type Pending struct {
	maxCount, maxBytes int
	stats              *Counters // nil: not counted

	mu     sync.Mutex
	count  int
	bytes  int
	closed bool
	space  chan struct{} // a Release or Close happened; made on the first wait
}

// NewPending returns a bound of maxCount invocations and maxBytes bytes
// (both at least 1; one invocation is always let through when none waits,
// whatever its size). stats, when not nil, counts its invocations in
// PendingInvocations and a wait in ReadsPaused.
func NewPending(maxCount, maxBytes int, stats *Counters) *Pending {
	return &Pending{maxCount: max(maxCount, 1), maxBytes: max(maxBytes, 1), stats: stats}
}

// Acquire takes room for one invocation of size bytes, waiting while the
// bound is reached. It returns false, taking nothing, once the bound is
// closed or gone is closed.
func (p *Pending) Acquire(size int, gone <-chan struct{}) bool {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return false
		}
		if p.count == 0 || (p.count < p.maxCount && p.bytes+size <= p.maxBytes) {
			p.count++
			p.bytes += size
			if p.stats != nil {
				p.stats.PendingInvocations.Add(1)
			}
			p.mu.Unlock()
			return true
		}
		if p.space == nil {
			p.space = make(chan struct{}, 1)
		}
		space := p.space
		p.mu.Unlock()
		if !p.wait(space, gone) {
			return false
		}
	}
}

// wait waits for space or gone, counted in ReadsPaused; it reports space.
func (p *Pending) wait(space, gone <-chan struct{}) bool {
	if p.stats != nil {
		p.stats.ReadsPaused.Add(1)
		defer p.stats.ReadsPaused.Add(-1)
	}
	select {
	case <-space:
		return true
	case <-gone:
		return false
	}
}

// Release gives back what Acquire(size) took.
func (p *Pending) Release(size int) {
	p.mu.Lock()
	p.count--
	p.bytes -= size
	if p.stats != nil && !p.closed {
		p.stats.PendingInvocations.Add(-1)
	}
	space := p.space
	p.mu.Unlock()
	if space != nil {
		signal(space)
	}
}

// Close ends the bound: a waiting Acquire and every later one return
// false. Idempotent.
func (p *Pending) Close() {
	p.mu.Lock()
	if p.stats != nil && !p.closed {
		// What still waits is no longer counted: the connection ended.
		p.stats.PendingInvocations.Add(int64(-p.count))
	}
	p.closed = true
	space := p.space
	p.mu.Unlock()
	if space != nil {
		signal(space)
	}
}

// Waiting returns the count and bytes of the invocations held now.
func (p *Pending) Waiting() (count, bytes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count, p.bytes
}

// Closed reports the end of the socket; err is nil for a normal close.
func (in *Inbound) Closed(err error) {
	// Ending the streams also ends a push waiting for room (finish
	// signals space).
	in.uploads.CloseAll(errConnectionClosed)
	in.root.Send(in.pid, &ClientClosed{Err: err})
}

// StreamError is how an upload stream ends when the client completed it
// with an error: Upload.Err returns it, carrying the client's message.
type StreamError struct{ Message string }

// Error says the stream failed, with the client's message.
func (e *StreamError) Error() string {
	return "the client ended the upload stream with an error: " + e.Message
}

var (
	errConnectionClosed = errors.New("connection closed")
	errStreamIDReused   = errors.New("stream id reused by a new invocation")
	errTooManyStreams   = errors.New("too many upload streams open")
)
