package conn

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubfabric/hubfabric/internal/metrics"
	"github.com/hubfabric/hubfabric/internal/seam"
)

// ErrOutboundOverflow is returned by Enqueue when the client reads too
// slowly: its queue exceeded the configured bound and the connection is
// being closed.
var ErrOutboundOverflow = errors.New("conn: outbound queue overflow: the client is not reading fast enough")

// ErrConnectionClosed is returned by Enqueue after the connection started
// closing.
var ErrConnectionClosed = errors.New("conn: connection closed")

// maxCoalescedFrame bounds how many bytes of queued records are written as
// one WebSocket frame when a connection is backlogged.
const maxCoalescedFrame = 64 << 10

// outbound is a connection's bounded queue of framed records on their way to
// the socket. Records are never split; when several are queued they are
// written as one frame (SignalR allows several records per frame). Writing
// runs on a goroutine started on demand and ended when the queue is empty,
// so an idle connection has no writer goroutine. Over a TrySocket, when no
// writer is at work, the caller of enqueue (or flush) writes the queued
// records itself as one frame, without waiting for the client; the
// goroutine starts only when the socket did not take that frame whole or
// more records came meanwhile. All methods are safe for concurrent use;
// fan-out never blocks on a slow client: enqueue only appends, writes what
// the socket takes at once, or fails.
type outbound struct {
	sock     Socket
	try      TrySocket // sock, when it can write without waiting; nil otherwise
	rt       seam.Runtime
	maxBytes int
	wg       sync.WaitGroup // writer goroutines; Conn.Wait joins them

	lastWrite atomic.Int64 // unix nanos of the last enqueue, for keep-alive

	mu        sync.Mutex
	queue     [][]byte
	queued    int
	writing   bool
	held      bool   // records wait until Release
	greetWait bool   // released, but the greeting is still in the queue (not taken by the writer)
	greeting  []byte // the handshake answer, written before anything else
	closing   bool
	closeRec  []byte // the Close record to send before closing, if any
	lastTaken bool   // the writer took the last frame (greeting and Close record)
	done      chan struct{}
	kill      seam.Timer // forces the socket shut if a write hangs after Close
	buf       []byte     // coalescing buffer, used only by the writer
	overflow  func()
	writer    func()        // writeLoop as a func value, made once: started per burst
	paused    bool          // HandOver waits for the writer to stop: it takes nothing more
	idle      func()        // called (once) by the writer when it stops while paused
	spilled   bool          // an inline write left bytes in the socket: the writer flushes them first
	deferred  bool          // enqueueDeferred queued records that wait for flush
	forward   func([]byte)  // set by HandOver: records go there instead of the queue
	stats     *metrics.Conn // nil: no metrics
}

// errForwarded tells enqueue's helpers that a moved connection's record
// went to its forward func instead of the queue.
var errForwarded = errors.New("conn: record forwarded")

// closeGrace is how long a write already in progress may go on after Close
// before the socket is shut under it.
const closeGrace = 5 * time.Second

// newOutbound returns a held outbound: records queue up but nothing is
// written until release, which writes greeting (the handshake answer)
// first. A Close while held still writes greeting before its Close record,
// unless refuse replaced it.
func newOutbound(sock Socket, rt seam.Runtime, maxBytes int, greeting []byte) *outbound {
	o := &outbound{sock: sock, rt: rt, maxBytes: maxBytes, done: make(chan struct{}), held: true, greeting: greeting}
	o.writer = o.writeLoop
	o.try, _ = sock.(TrySocket)
	o.lastWrite.Store(rt.Now().UnixNano())
	return o
}

// enqueue queues one framed record. The bytes are not copied and must not
// be modified afterwards (the same slice may be shared by many connections).
// It fails with ErrOutboundOverflow, and starts closing the connection, when
// the queue holds more than the configured number of bytes.
func (o *outbound) enqueue(record []byte) error {
	o.mu.Lock()
	if err := o.appendLocked(record); err != nil || o.writing || o.held || o.paused {
		o.mu.Unlock()
		if err == errForwarded {
			return nil
		}
		return err
	}
	o.deferred = false
	o.startLocked()
	return nil
}

// enqueueDeferred queues record as enqueue does but does not start
// writing it: flush is true when the caller must call flush later (the
// outbound was idle, and nothing else will write what it queued). Records
// queued this way between two flushes go out as one frame. Over a socket
// that is not a TrySocket it is enqueue.
func (o *outbound) enqueueDeferred(record []byte) (flush bool, err error) {
	if o.try == nil {
		// Only a socket that takes writes without waiting batches: a
		// stateful connection (its records are numbered and kept for the
		// client's Ack, and may move to another node) is written at once.
		return false, o.enqueue(record)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.appendLocked(record); err != nil || o.writing || o.held || o.paused || o.deferred {
		if err == errForwarded {
			err = nil
		}
		return false, err
	}
	o.deferred = true
	return true, nil
}

// flush writes what enqueueDeferred queued, unless a writer is already at
// work (it takes those records too).
func (o *outbound) flush() {
	o.mu.Lock()
	o.deferred = false
	if o.writing || o.held || o.paused || o.closing || len(o.queue) == 0 {
		o.mu.Unlock()
		return
	}
	o.startLocked()
}

// appendLocked queues record, or says why not: the connection is closing,
// or the record overflows the queue (which starts closing it).
func (o *outbound) appendLocked(record []byte) error {
	if fwd := o.forward; fwd != nil {
		o.mu.Unlock()
		fwd(record)
		o.mu.Lock()
		return errForwarded
	}
	if o.closing {
		return ErrConnectionClosed
	}
	if o.queued+len(record) > o.maxBytes && o.queued > 0 {
		queued := o.queued
		o.mu.Unlock()
		if o.stats != nil && o.stats.QueueBytes != nil {
			o.stats.QueueBytes.Observe(float64(queued)) // the backlog that closes the client
		}
		if o.overflow != nil {
			o.overflow()
		}
		o.mu.Lock()
		return ErrOutboundOverflow
	}
	o.queue = append(o.queue, record)
	o.queued += len(record)
	o.account(len(record), 1)
	o.lastWrite.Store(o.rt.Now().UnixNano())
	return nil
}

// startLocked starts writing the queue: inline (one frame of what is
// queued) over a TrySocket, on the writer goroutine otherwise. It is
// called with mu held and no writer at work, and unlocks mu.
func (o *outbound) startLocked() {
	o.writing = true
	o.wg.Add(1) // the writer, inline or not: Conn.Wait joins it
	if o.try == nil {
		o.mu.Unlock()
		o.rt.Go(o.writer)
		return
	}
	frame, records, queued := o.takeLocked()
	o.mu.Unlock()
	o.count(records, queued)
	o.writeInline(frame)
}

// writeInline writes frame (records taken from the queue) on the caller's
// goroutine without waiting for the client, and hands over to the writer
// goroutine when the socket did not take it whole, records are still
// queued, the connection is closing or the write failed.
func (o *outbound) writeInline(frame []byte) {
	complete, err := o.try.TryWriteFrame(frame)
	if err != nil {
		o.rt.Go(o.failWrite) // a method value made only when a write failed
		return
	}
	o.mu.Lock()
	if !complete {
		o.spilled = true
	}
	if !complete || o.closing || (len(o.queue) > 0 && !o.paused) {
		o.mu.Unlock()
		o.rt.Go(o.writer)
		return
	}
	o.writing = false
	idle := o.idle
	o.idle = nil
	o.mu.Unlock()
	o.wg.Done()
	if idle != nil {
		idle()
	}
}

// release writes the greeting and then everything queued while the
// outbound was held, and lets later records go out as they come. It has no
// effect after Close or a first Release.
func (o *outbound) release() {
	o.mu.Lock()
	if o.closing || !o.held {
		o.mu.Unlock()
		return
	}
	o.held = false
	if len(o.greeting) == 0 { // a connection that moved here: the client was greeted elsewhere
		if len(o.queue) == 0 {
			o.mu.Unlock()
			return
		}
	} else {
		o.greetWait = true
		o.queue = append([][]byte{o.greeting}, o.queue...)
		o.queued += len(o.greeting)
		o.account(len(o.greeting), 1)
	}
	o.writing = true
	o.mu.Unlock()
	o.wg.Add(1)
	o.rt.Go(o.writer)
}

// close discards what is queued, writes closeRecord (a framed Close hub
// message, or nil for none) and closes the WebSocket with status 1000. It
// returns at once; Done is closed when the socket is closed. Close is
// idempotent: only the first call's record is sent.
func (o *outbound) close(closeRecord []byte) {
	o.mu.Lock()
	if o.closing {
		o.mu.Unlock()
		return
	}
	o.closing = true
	o.closeRec = closeRecord
	o.dropQueueLocked()
	start := !o.writing
	o.writing = true
	if !start {
		// A write is in progress; if the client stopped reading it may
		// never return by itself.
		o.kill = o.rt.AfterFunc(closeGrace, func() { _ = o.sock.CloseNow() })
	}
	o.mu.Unlock()
	if start {
		o.wg.Add(1)
		o.rt.Go(o.writer)
	}
}

// refuse closes a held outbound with record (a handshake error answer)
// instead of the greeting.
//
// When the outbound was already closed during connect (a Close, or an
// overflow of what the hub queued), the refusal takes the place of that
// Close record, so the client still hears a handshake answer first, unless
// the writer already took its last frame (then the greeting and the Close
// went out, and nothing can be taken back).
func (o *outbound) refuse(record []byte) {
	o.mu.Lock()
	if o.closing {
		if !o.lastTaken {
			o.greeting, o.closeRec = nil, record
		}
		o.mu.Unlock()
		return
	}
	o.greeting = nil
	o.mu.Unlock()
	o.close(record)
}

func (o *outbound) writeLoop() {
	defer o.wg.Done()
	o.mu.Lock()
	flush := o.spilled
	o.spilled = false
	o.mu.Unlock()
	if flush {
		if err := o.try.Flush(); err != nil {
			o.fail()
			return
		}
	}
	for {
		o.mu.Lock()
		if o.closing {
			last := o.lastFrameLocked(o.closeRec)
			idle := o.idle
			o.idle = nil
			o.mu.Unlock()
			o.finish(last)
			if idle != nil {
				idle()
			}
			return
		}
		if len(o.queue) == 0 || o.paused {
			o.writing = false
			idle := o.idle
			o.idle = nil
			o.mu.Unlock()
			if idle != nil {
				idle()
			}
			return
		}
		frame, records, queued := o.takeLocked()
		o.mu.Unlock()
		o.count(records, queued)
		// No deadline context: with one, coder/websocket arms and disarms a
		// timer per write (5% of a node's CPU at 5,000 publishes/s). Close
		// bounds a hung write instead.
		if err := o.sock.WriteFrame(context.Background(), frame); err != nil {
			o.fail()
			return
		}
	}
}

// failWrite is the writer goroutine after an inline write failed.
func (o *outbound) failWrite() {
	defer o.wg.Done()
	o.fail()
}

// fail ends the connection after a failed write: the socket is broken,
// so nothing more goes out.
func (o *outbound) fail() {
	o.mu.Lock()
	o.closing = true
	o.closeRec = nil
	o.dropQueueLocked()
	o.lastTaken = true
	o.mu.Unlock()
	o.finish(nil)
}

// count adds a frame of records, taken with queued bytes waiting, to the
// stats: once per frame, not per record, since a backlogged connection
// coalesces many records into one write.
func (o *outbound) count(records, queued int) {
	if st := o.stats; st != nil {
		st.Sent.Add(uint64(records))
		if st.QueueBytes != nil {
			st.QueueBytes.Observe(float64(queued))
		}
	}
}

// takeLocked removes up to maxCoalescedFrame bytes of whole records from
// the queue and returns them as one frame, with how many records it holds
// and how many bytes were queued before.
func (o *outbound) takeLocked() (frame []byte, records, queued int) {
	queued, records = o.queued, len(o.queue)
	frame = o.takeFrameLocked()
	records -= len(o.queue)
	o.account(o.queued-queued, -records)
	return frame, records, queued
}

// dropQueueLocked discards what is queued.
func (o *outbound) dropQueueLocked() {
	o.account(-o.queued, -len(o.queue))
	o.queue, o.queued = nil, 0
}

// account adds to the stats' gauges of queued bytes and records.
func (o *outbound) account(bytes, records int) {
	if st := o.stats; st != nil {
		st.QueuedBytes.Add(int64(bytes))
		st.QueuedRecords.Add(int64(records))
	}
}

// takeFrameLocked is takeLocked's frame.
func (o *outbound) takeFrameLocked() []byte {
	o.greetWait = false // the greeting is the queue's first record
	if len(o.queue) == 1 || len(o.queue[0]) >= maxCoalescedFrame {
		rec := o.queue[0]
		o.queue[0] = nil
		o.queue = o.queue[1:]
		o.queued -= len(rec)
		o.compactLocked()
		return rec
	}
	o.buf = o.buf[:0]
	n := 0
	for n < len(o.queue) && (n == 0 || len(o.buf)+len(o.queue[n]) <= maxCoalescedFrame) {
		o.buf = append(o.buf, o.queue[n]...)
		o.queued -= len(o.queue[n])
		o.queue[n] = nil
		n++
	}
	o.queue = o.queue[n:]
	o.compactLocked()
	return o.buf
}

// compactLocked lets the queue's backing array be reclaimed once drained.
func (o *outbound) compactLocked() {
	if len(o.queue) == 0 {
		o.queue = nil
	}
}

// lastFrameLocked takes the connection's last frame: the greeting when it
// was closed before Release, or after Release but before the writer took
// the greeting from the queue (the client still needs it first), then
// closeRecord. After it, refuse can no longer change what is sent.
func (o *outbound) lastFrameLocked(closeRecord []byte) []byte {
	o.lastTaken = true
	var frame []byte
	if o.held || o.greetWait {
		frame = append(frame, o.greeting...)
	}
	return append(frame, closeRecord...)
}

// finish writes frame (the last one; may be empty) and closes the socket.
func (o *outbound) finish(frame []byte) {
	if len(frame) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = o.sock.WriteFrame(ctx, frame)
		cancel()
	}
	_ = o.sock.Close()
	o.mu.Lock()
	if o.kill != nil {
		o.kill.Stop()
	}
	o.mu.Unlock()
	close(o.done)
}
