package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// waitGuard bounds every wait of these tests: it only turns a deadlock into
// a failure, it is never how long a test takes.
const waitGuard = 10 * time.Second

// errKilled is what a fake write cut off by CloseNow returns.
var errKilled = errors.New("fakeSocket: closed now")

// fakeSocket is a Socket that records what the connection does to it. Writes
// can be made to wait (block/unblock) or to fail (failWrites). Every change
// of its state is broadcast on changed, so tests wait for a condition
// (await) instead of sleeping. Safe for concurrent use.
type fakeSocket struct {
	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	attempts  [][]byte      // every frame WriteFrame was called with, copied
	frames    [][]byte      // the frames that were written successfully
	waiting   int           // writes waiting at the gate now
	gate      chan struct{} // non-nil: new writes wait until it is closed
	failErr   error         // non-nil: writes fail with it
	closes    int
	closeNows int
	killed    chan struct{} // closed by the first CloseNow
}

func newFakeSocket() *fakeSocket {
	return &fakeSocket{changed: make(chan struct{}), killed: make(chan struct{})}
}

// notifyLocked wakes every await.
func (s *fakeSocket) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WriteFrame implements Socket.
func (s *fakeSocket) WriteFrame(ctx context.Context, frame []byte) error {
	cp := bytes.Clone(frame) // the connection reuses its coalescing buffer
	s.mu.Lock()
	s.attempts = append(s.attempts, cp)
	s.notifyLocked()
	if gate := s.gate; gate != nil {
		s.waiting++
		s.notifyLocked()
		s.mu.Unlock()
		var err error
		select {
		case <-gate:
		case <-s.killed:
			err = errKilled
		case <-ctx.Done():
			err = ctx.Err()
		}
		s.mu.Lock()
		s.waiting--
		s.notifyLocked()
		if err != nil {
			s.mu.Unlock()
			return err
		}
	}
	defer s.mu.Unlock()
	select {
	case <-s.killed:
		return errKilled
	default:
	}
	if s.failErr != nil {
		return s.failErr
	}
	s.frames = append(s.frames, cp)
	s.notifyLocked()
	return nil
}

// Close implements Socket.
func (s *fakeSocket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closes++
	s.notifyLocked()
	return nil
}

// CloseNow implements Socket: it also cuts off a write waiting at the gate.
func (s *fakeSocket) CloseNow() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeNows == 0 {
		close(s.killed)
	}
	s.closeNows++
	s.notifyLocked()
	return nil
}

// block makes the writes that start from now on wait until unblock.
func (s *fakeSocket) block() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

// unblock lets every waiting write go on, and later ones not wait.
func (s *fakeSocket) unblock() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}

// failWrites makes later writes fail with err.
func (s *fakeSocket) failWrites(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failErr = err
}

// await waits until cond, called with s.mu held, is true.
func (s *fakeSocket) await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	guard := time.NewTimer(waitGuard)
	defer guard.Stop()
	for {
		s.mu.Lock()
		ok := cond()
		ch := s.changed
		state := fmt.Sprintf("%d attempts, %d frames, %d waiting, %d Close, %d CloseNow", len(s.attempts), len(s.frames), s.waiting, s.closes, s.closeNows)
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-guard.C:
			t.Fatalf("timed out waiting for %s (socket: %s)", what, state)
		}
	}
}

// awaitWaiting waits until n writes wait at the gate.
func (s *fakeSocket) awaitWaiting(t *testing.T, n int) {
	t.Helper()
	s.await(t, fmt.Sprintf("%d blocked writes", n), func() bool { return s.waiting >= n })
}

// awaitFrames waits until n frames were written.
func (s *fakeSocket) awaitFrames(t *testing.T, n int) {
	t.Helper()
	s.await(t, fmt.Sprintf("%d frames", n), func() bool { return len(s.frames) >= n })
}

// awaitBytes waits until n bytes were written.
func (s *fakeSocket) awaitBytes(t *testing.T, n int) {
	t.Helper()
	s.await(t, fmt.Sprintf("%d bytes written", n), func() bool {
		total := 0
		for _, f := range s.frames {
			total += len(f)
		}
		return total >= n
	})
}

// snapshot is a copy of what the socket saw.
type socketState struct {
	attempts, frames  [][]byte
	closes, closeNows int
}

func (s *fakeSocket) snapshot() socketState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return socketState{
		attempts: append([][]byte(nil), s.attempts...),
		frames:   append([][]byte(nil), s.frames...),
		closes:   s.closes, closeNows: s.closeNows,
	}
}

// stream is every written frame, concatenated.
func (st socketState) stream() []byte { return bytes.Join(st.frames, nil) }

// fakeRuntime is a seam.Runtime on a manual clock: AfterFunc timers run only
// when the test advances the clock past them (on the test's goroutine, in
// time order), and Go runs fn on a real goroutine tracked by a WaitGroup,
// or, while held, keeps it until the test lets it run.
type fakeRuntime struct {
	mu      sync.Mutex
	now     time.Time
	seq     int
	timers  []*fakeTimer
	hold    bool
	held    []func()
	active  int           // goroutines started by Go still running
	changed chan struct{} // closed and replaced when one of them returns
	joined  []*sync.WaitGroup
	wg      sync.WaitGroup
}

var _ seam.Runtime = (*fakeRuntime)(nil)

// fakeEpoch is where fake clocks start.
var fakeEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newFakeRuntime returns a fake runtime whose goroutines the test's cleanup
// waits for.
func newFakeRuntime(t *testing.T) *fakeRuntime {
	r := &fakeRuntime{now: fakeEpoch, changed: make(chan struct{})}
	t.Cleanup(func() {
		r.setHold(false)
		r.wg.Wait()
	})
	return r
}

type fakeTimer struct {
	r      *fakeRuntime
	when   time.Time
	seq    int
	fn     func()
	active bool
}

// Go implements seam.Runtime.
func (r *fakeRuntime) Go(fn func()) {
	r.mu.Lock()
	if r.hold {
		r.held = append(r.held, fn)
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	r.start(fn)
}

func (r *fakeRuntime) start(fn func()) {
	r.mu.Lock()
	r.active++
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn()
		r.mu.Lock()
		r.active--
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}()
}

// awaitQuiet waits until every goroutine started by Go has returned (none
// is held): for the connection, its writer has found the queue empty.
func (r *fakeRuntime) awaitQuiet(t *testing.T) {
	t.Helper()
	guard := time.NewTimer(waitGuard)
	defer guard.Stop()
	for {
		r.mu.Lock()
		active, held, ch := r.active, len(r.held), r.changed
		r.mu.Unlock()
		if active == 0 && held == 0 {
			return
		}
		select {
		case <-ch:
		case <-guard.C:
			t.Fatalf("timed out waiting for %d goroutines to end (%d held)", active, held)
		}
	}
}

// setHold makes later Go calls wait (true) or starts those held (false).
func (r *fakeRuntime) setHold(hold bool) {
	r.mu.Lock()
	r.hold = hold
	var run []func()
	if !hold {
		run, r.held = r.held, nil
	}
	r.mu.Unlock()
	for _, fn := range run {
		r.start(fn)
	}
}

// runHeld runs the held goroutines' functions on the calling goroutine,
// one after the other, and returns how many it ran.
func (r *fakeRuntime) runHeld() int {
	r.mu.Lock()
	run := r.held
	r.held = nil
	r.mu.Unlock()
	for _, fn := range run {
		fn()
	}
	return len(run)
}

// AfterFunc implements seam.Runtime.
func (r *fakeRuntime) AfterFunc(d time.Duration, fn func()) seam.Timer {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	t := &fakeTimer{r: r, when: r.now.Add(d), seq: r.seq, fn: fn, active: true}
	r.timers = append(r.timers, t)
	return t
}

// Stop implements seam.Timer.
func (t *fakeTimer) Stop() bool {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

// Reset implements seam.Timer, as time.Timer does for AfterFunc: it re-arms
// the call even after it ran.
func (t *fakeTimer) Reset(d time.Duration) bool {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	was := t.active
	t.r.seq++
	t.when, t.seq, t.active = t.r.now.Add(d), t.r.seq, true
	return was
}

// Now implements seam.Runtime.
func (r *fakeRuntime) Now() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

// since is how long the fake clock ran.
func (r *fakeRuntime) since() time.Duration { return r.Now().Sub(fakeEpoch) }

// Request implements seam.Runtime; the connection code never asks actors.
func (r *fakeRuntime) Request(*actor.RootContext, *actor.PID, any, time.Duration) seam.Awaiter {
	panic("fakeRuntime: Request is not used by package conn")
}

// Join implements seam.Runtime, recording what it joined.
func (r *fakeRuntime) Join(wg *sync.WaitGroup) {
	r.mu.Lock()
	r.joined = append(r.joined, wg)
	r.mu.Unlock()
	wg.Wait()
}

func (r *fakeRuntime) hasJoined(wg *sync.WaitGroup) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.joined {
		if j == wg {
			return true
		}
	}
	return false
}

// advance moves the clock d forward, running every timer due on the way
// at its due time, in order, on the calling goroutine.
func (r *fakeRuntime) advance(d time.Duration) {
	r.mu.Lock()
	target := r.now.Add(d)
	r.mu.Unlock()
	for i := 0; ; i++ {
		if i > 100000 {
			panic("fakeRuntime: timers keep re-arming without time passing")
		}
		r.mu.Lock()
		var next *fakeTimer
		for _, t := range r.timers {
			if !t.active || t.when.After(target) {
				continue
			}
			if next == nil || t.when.Before(next.when) || (t.when.Equal(next.when) && t.seq < next.seq) {
				next = t
			}
		}
		if next == nil {
			r.now = target
			r.mu.Unlock()
			return
		}
		if next.when.After(r.now) {
			r.now = next.when
		}
		next.active = false
		fn := next.fn
		r.mu.Unlock()
		fn()
	}
}

// pending lists the due times (from the fake epoch) of the armed timers.
func (r *fakeRuntime) pending() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for _, t := range r.timers {
		if t.active {
			out = append(out, t.when.Sub(fakeEpoch))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// fakeSession records Closed calls.
type fakeSession struct {
	mu   sync.Mutex
	errs []error
}

// Closed implements Session.
func (s *fakeSession) Closed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
}

func (s *fakeSession) closed() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// protocols are the hub protocols the tests run with.
var protocols = []protocol.HubProtocol{protocol.JSON, protocol.MessagePack}

// testOptions are valid options on rt with limits that tests do not reach
// unless they mean to.
func testOptions(p protocol.HubProtocol, rt seam.Runtime) Options {
	return Options{
		ID: "conn-1", Protocol: p, MaxOutboundBytes: 1 << 20,
		KeepAlive: 15 * time.Second, ClientTimeout: 30 * time.Second,
		Runtime: rt,
	}
}

// openConn opens a connection whose connect succeeds after calling during
// (when not nil), and registers a cleanup that closes it and waits for it.
func openConn(t *testing.T, sock *fakeSocket, opts Options, during func(*Conn)) (*Conn, *fakeSession) {
	t.Helper()
	sess := &fakeSession{}
	c, err := Open(context.Background(), sock, opts, func(_ context.Context, c *Conn) (Session, error) {
		if during != nil {
			during(c)
		}
		return sess, nil
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	cleanupConn(t, sock, c)
	return c, sess
}

// cleanupConn makes sure c is closed and its writer ended when t ends.
func cleanupConn(t *testing.T, sock *fakeSocket, c *Conn) {
	t.Cleanup(func() {
		sock.unblock()
		c.Close("", false)
		if r, ok := c.opts.Runtime.(*fakeRuntime); ok {
			r.setHold(false)
		}
		c.Wait()
	})
}

// record encodes an invocation of target with p.
func record(t *testing.T, p protocol.HubProtocol, target string, args ...any) []byte {
	t.Helper()
	if args == nil {
		args = []any{}
	}
	rec, err := p.AppendMessage(nil, &protocol.Invocation{Target: target, Arguments: args})
	if err != nil {
		t.Fatalf("encode %s: %v", target, err)
	}
	return rec
}

// encode encodes m with p.
func encode(t *testing.T, p protocol.HubProtocol, m protocol.Message) []byte {
	t.Helper()
	rec, err := p.AppendMessage(nil, m)
	if err != nil {
		t.Fatalf("encode %#v: %v", m, err)
	}
	return rec
}

// parseAll parses data, which must be whole records, with p.
func parseAll(t *testing.T, p protocol.HubProtocol, data []byte) []protocol.Message {
	t.Helper()
	msgs, n, err := p.ParseMessages(data, 1<<20)
	if err != nil {
		t.Fatalf("%s: parse %q: %v", p.Name(), short(data), err)
	}
	if n != len(data) {
		t.Fatalf("%s: parse %q: only %d of %d bytes are whole records", p.Name(), short(data), n, len(data))
	}
	return msgs
}

// parseClose parses frame, which must be exactly one Close record (after
// the greeting, when the frame carries it).
func parseClose(t *testing.T, p protocol.HubProtocol, frame []byte) *protocol.Close {
	t.Helper()
	// A Close made before the writer took the greeting goes out in one
	// frame with it (the greeting first).
	msgs := parseAll(t, p, bytes.TrimPrefix(frame, protocol.AppendHandshakeResponse(nil, "")))
	if len(msgs) != 1 {
		t.Fatalf("frame %q holds %d messages, want one Close", short(frame), len(msgs))
	}
	cl, ok := msgs[0].(*protocol.Close)
	if !ok {
		t.Fatalf("frame %q holds a %T, want a Close", short(frame), msgs[0])
	}
	return cl
}

// recordsPerFrame checks that frames, concatenated, are exactly records in
// order with every record whole inside one frame, and returns how many
// records each frame holds.
func recordsPerFrame(t *testing.T, frames, records [][]byte) []int {
	t.Helper()
	var counts []int
	i := 0
	for f, frame := range frames {
		n := 0
		for off := 0; off < len(frame); {
			if i == len(records) {
				t.Fatalf("frame %d has %d bytes after the last record: %q", f, len(frame)-off, short(frame[off:]))
			}
			if !bytes.HasPrefix(frame[off:], records[i]) {
				t.Fatalf("frame %d at byte %d: want record %d whole (%q), got %q", f, off, i, short(records[i]), short(frame[off:]))
			}
			off += len(records[i])
			i++
			n++
		}
		if n == 0 {
			t.Fatalf("frame %d is empty", f)
		}
		counts = append(counts, n)
	}
	if i != len(records) {
		t.Fatalf("%d of %d records written", i, len(records))
	}
	return counts
}

// awaitDone waits until c's socket was closed.
func awaitDone(t *testing.T, c *Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitGuard):
		t.Fatal("timed out waiting for Done")
	}
}

// waitReturns runs fn (such as Conn.Wait) and fails t if it does not return.
func waitReturns(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(waitGuard):
		t.Fatalf("%s did not return", what)
	}
}

// isClosing reports whether the connection started closing.
func isClosing(c *Conn) bool {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	return c.out.closing
}

// awaitIdle waits until c's writer, on rt, has ended and checks that
// nothing is left queued.
func awaitIdle(t *testing.T, rt *fakeRuntime, c *Conn) {
	t.Helper()
	rt.awaitQuiet(t)
	if !outboundIdle(c) {
		t.Fatal("no writer runs but the outbound queue is not idle")
	}
}

// outboundIdle reports whether nothing is queued and no writer runs.
func outboundIdle(c *Conn) bool {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	return len(c.out.queue) == 0 && !c.out.writing
}

// short truncates b for messages.
func short(b []byte) []byte {
	if len(b) > 120 {
		return append(b[:120:120], "..."...)
	}
	return b
}

// raw is a synthetic record of n bytes (the outbound queue never looks
// inside records), distinct per tag.
func raw(tag byte, n int) []byte {
	b := bytes.Repeat([]byte{tag}, n)
	b[n-1] = protocol.RecordSeparator
	return b
}
