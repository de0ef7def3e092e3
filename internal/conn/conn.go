// Package conn is the server side of one SignalR connection, whatever
// carries its frames: the bounded outbound queue (records coalesced into
// frames while the client is backlogged, the handshake answer held until
// the hub has the connection, a Close message saying why when the client
// is too slow), keep-alive Pings and the client timeout. The WebSocket
// transport runs it over coder/websocket; the testkit runs the same code
// over an in-memory pipe on its virtual clock.
package conn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubfabric/hubfabric/internal/metrics"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// Socket carries a connection's outgoing frames: one call, one WebSocket
// message. The connection calls WriteFrame from one goroutine at a time.
type Socket interface {
	// WriteFrame writes one frame. It may block while the client reads
	// slowly; ctx bounds it when it has a deadline.
	WriteFrame(ctx context.Context, frame []byte) error
	// Close closes the socket normally after what was written.
	Close() error
	// CloseNow closes it at once, cutting off a write in progress.
	CloseNow() error
}

// TrySocket is a Socket that can also write without waiting for the
// client. A connection over one writes a record inline, on the goroutine
// that queues it, when nothing else is queued or being written, and
// starts its writer goroutine only when the client falls behind (the
// socket did not take a frame whole) or records pile up. Calls are made
// by one goroutine at a time, as for WriteFrame.
type TrySocket interface {
	Socket
	// TryWriteFrame writes frame as far as the socket takes it at once and
	// keeps the rest, which Flush or the next WriteFrame writes first;
	// complete is false when something was kept. It does not wait for the
	// client.
	TryWriteFrame(frame []byte) (complete bool, err error)
	// Flush writes what TryWriteFrame kept, waiting for the client.
	Flush() error
}

// Options configure a connection. Every field is required except Logger
// (nil discards) and Stats (nil counts nothing).
type Options struct {
	ID       string
	Protocol protocol.HubProtocol
	// MaxOutboundBytes bounds the bytes queued for the client; past it the
	// client is closed with a Close message saying it was too slow.
	MaxOutboundBytes int
	// KeepAlive: a Ping is queued when nothing was queued for this long.
	KeepAlive time.Duration
	// ClientTimeout: the connection is closed when the client sent nothing
	// for this long, counted from its first message (see Received).
	ClientTimeout time.Duration
	// Runtime starts the writer goroutine and the timers, and is the clock.
	Runtime seam.Runtime
	Logger  *slog.Logger
	// Stats, when set, counts the records written, the slow-client closes
	// and the queued bytes of this connection into its hub's totals (the
	// same *metrics.Conn for every connection of a hub).
	Stats *metrics.Conn
	// Resumed opens a connection that moved here from another node: its
	// client was greeted there, so no handshake answer is written.
	Resumed bool
}

func (o Options) check() error {
	switch {
	case o.Protocol == nil:
		return errors.New("conn: Options.Protocol is required")
	case o.Runtime == nil:
		return errors.New("conn: Options.Runtime is required")
	case o.MaxOutboundBytes <= 0 || o.KeepAlive <= 0 || o.ClientTimeout <= 0:
		return fmt.Errorf("conn: MaxOutboundBytes, KeepAlive and ClientTimeout must be positive (got %d, %s, %s)", o.MaxOutboundBytes, o.KeepAlive, o.ClientTimeout)
	}
	return nil
}

// Session is the hub side of a connection: what Open's connect returns.
type Session interface {
	// Closed reports that the connection ended; err is nil for a normal
	// close by the client.
	Closed(err error)
}

// Conn is one connection's server side: its id, its protocol and its
// outbound queue (it implements the actors' Outlet). Safe for concurrent
// use.
type Conn struct {
	opts    Options
	log     *slog.Logger
	out     *outbound
	session Session

	closeOnce  sync.Once
	slow       atomic.Bool // the outbound queue overflowed
	closeErr   atomic.Pointer[error]
	lastRead   atomic.Int64 // unix nanos; 0 until the client's first message
	handingOff atomic.Int32 // >0 while the reader hands a message on (HandOff)
	hb         heartbeat
	endOnce    sync.Once
}

// Open makes the server side of a connection over sock and runs the steps
// every transport shares: output is held while connect attaches the
// connection to its hub, then the handshake answer goes out first and
// the heartbeat starts, so the client hears back only once any node can
// reach it. When connect fails, the client gets a handshake error naming
// the cause, the socket is closed and Open returns the error with the Conn
// (Wait for the refusal to be written). Call End when the client's side
// of the connection ends.
func Open(ctx context.Context, sock Socket, opts Options, connect func(context.Context, *Conn) (Session, error)) (*Conn, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Conn{opts: opts, log: log}
	var greeting []byte
	if !opts.Resumed {
		greeting = protocol.AppendHandshakeResponse(nil, "")
	}
	c.out = newOutbound(sock, opts.Runtime, opts.MaxOutboundBytes, greeting)
	c.out.stats = opts.Stats
	c.out.overflow = c.overflowed
	session, err := connect(ctx, c)
	if err != nil {
		log.Info("connection refused by hub", "err", err)
		c.out.refuse(protocol.AppendHandshakeResponse(nil, "Connection refused: "+err.Error()))
		return c, err
	}
	c.session = session
	c.out.release()
	c.hb.start(opts.Runtime, c)
	return c, nil
}

// overflowed closes a client whose outbound queue overflowed (outbound's
// overflow callback).
func (c *Conn) overflowed() {
	if c.opts.Stats != nil && c.slow.CompareAndSwap(false, true) {
		c.opts.Stats.SlowCloses.Add(1) // once, though racing enqueues may all overflow
	}
	c.log.Warn("closing slow client", "queued_bytes_limit", c.opts.MaxOutboundBytes)
	c.Close(fmt.Sprintf("Connection closed: the client is too slow; more than %d bytes were waiting to be sent.", c.opts.MaxOutboundBytes), true)
}

// ID is the connection id.
func (c *Conn) ID() string { return c.opts.ID }

// Stats is Options.Stats: where the connection's hub counts, nil for none.
func (c *Conn) Stats() *metrics.Conn { return c.opts.Stats }

// Protocol is the hub protocol chosen in the handshake.
func (c *Conn) Protocol() protocol.HubProtocol { return c.opts.Protocol }

// Enqueue queues a framed record for the client without copying it (the
// bytes may be shared by many connections and must not change). It fails
// with ErrOutboundOverflow, and starts closing the connection, when the
// queue would exceed MaxOutboundBytes, and with ErrConnectionClosed once
// the connection is closing. It never blocks.
func (c *Conn) Enqueue(record []byte) error { return c.out.enqueue(record) }

// EnqueueDeferred queues a framed record as Enqueue does but does not
// start writing it: records queued so between two Flush calls go out
// together, as one frame. flush is true when the caller must call Flush
// (once, after its batch) for them to be written; false when a writer is
// already at work, another EnqueueDeferred asked for the Flush, or err is
// set. A fan-out that queues a burst of sends this way pays one write per
// connection for the burst instead of one per send. Only a connection over
// a TrySocket defers; any other (a stateful one) queues and writes as
// Enqueue does, and flush is false.
func (c *Conn) EnqueueDeferred(record []byte) (flush bool, err error) {
	return c.out.enqueueDeferred(record)
}

// Flush writes what EnqueueDeferred queued, without waiting for the
// client: inline when the socket takes it at once, on the writer
// goroutine otherwise.
func (c *Conn) Flush() { c.out.flush() }

// Send encodes m with the connection's protocol and queues it.
func (c *Conn) Send(m protocol.Message) error {
	rec, err := c.opts.Protocol.AppendMessage(nil, m)
	if err != nil {
		return err
	}
	return c.out.enqueue(rec)
}

// Close sends a Close hub message carrying errMsg (omitted when empty) and
// allowReconnect, then closes the socket. Only the first call has an
// effect; it does not wait (see Wait).
func (c *Conn) Close(errMsg string, allowReconnect bool) {
	c.closeOnce.Do(func() {
		rec, _ := c.opts.Protocol.AppendMessage(nil, &protocol.Close{Error: errMsg, AllowReconnect: allowReconnect})
		if errMsg != "" {
			err := errors.New(errMsg)
			c.closeErr.Store(&err)
		}
		c.out.close(rec)
	})
}

// Received records that the client sent something now (any message,
// Pings included): it resets the client timeout.
func (c *Conn) Received() { c.lastRead.Store(c.opts.Runtime.Now().UnixNano()) }

// HandOff marks the reader as handing a message to the session, which may
// wait (for a free invocation slot, for room in an upload stream); the
// client timeout does not count that time, since the reader is not reading
// the client's Pings then. Call HandedOff, which counts as a receipt, when
// the session took the message. Safe for concurrent use.
func (c *Conn) HandOff() { c.handingOff.Add(1) }

// HandedOff ends a HandOff.
func (c *Conn) HandedOff() {
	c.Received()
	c.handingOff.Add(-1)
}

// End reports that the client's side ended (the socket's reader stopped;
// err is nil for a normal close): it stops the heartbeat, tells the session
// why the connection ended (the server's own Close reason, if it closed
// first), and closes the connection if it is still open. It does not wait;
// it is idempotent, and harmless on a Conn that Open refused.
func (c *Conn) End(err error) {
	c.endOnce.Do(func() {
		if c.session == nil { // refused by Open: no session, no heartbeat
			c.Close("", false)
			return
		}
		c.hb.stop()
		if ce := c.closeErr.Load(); ce != nil && err == nil {
			err = *ce
		}
		c.session.Closed(err)
		c.Close("", false)
	})
}

// Done is closed once the socket has been closed.
func (c *Conn) Done() <-chan struct{} { return c.out.done }

// Wait waits until the socket is closed and the writer goroutine ended.
func (c *Conn) Wait() {
	<-c.out.done
	c.opts.Runtime.Join(&c.out.wg)
}

// The Conn is its heartbeat's host: keep-alive and client timeout on one
// timer, so an idle connection has no goroutine for them.

func (c *Conn) heartbeatTimes() (keepAlive, timeout time.Duration) {
	return c.opts.KeepAlive, c.opts.ClientTimeout
}

func (c *Conn) now() time.Time { return c.opts.Runtime.Now() }

func (c *Conn) lastWriteTime() time.Time { return time.Unix(0, c.out.lastWrite.Load()) }

func (c *Conn) lastReadTime() (time.Time, bool) {
	last := c.lastRead.Load()
	if last != 0 && c.handingOff.Load() > 0 {
		return c.now(), true // the reader waits for the node, not for the client
	}
	return time.Unix(0, last), last != 0
}

func (c *Conn) ping() {
	rec, _ := c.opts.Protocol.AppendMessage(nil, &protocol.Ping{})
	_ = c.out.enqueue(rec)
}

func (c *Conn) expire(idle time.Duration) {
	c.log.Debug("client timeout", "idle", idle)
	c.Close(clientTimeoutMessage(c.opts.ClientTimeout), true)
}
