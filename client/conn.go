package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hubfabric/hubfabric/protocol"
)

// reconnectAttemptTimeout bounds one reconnect attempt (negotiate, WebSocket
// and handshake), like the JS client's 100 s HTTP timeout.
const reconnectAttemptTimeout = 100 * time.Second

// Conn is a SignalR hub connection made by Dial. Its methods are safe for
// concurrent use. A Conn lives until Close is called, the server closes it,
// or it is lost and not (or no longer) reconnected; Done and Err report the
// end. Always call Close: it releases and joins every goroutine of the Conn.
type Conn struct {
	url   string
	opts  Options
	proto protocol.HubProtocol
	log   *slog.Logger

	// ctx is the Conn's lifetime; Close cancels it, which stops reconnect
	// attempts and every session.
	ctx    context.Context
	cancel context.CancelFunc

	wg           sync.WaitGroup // run, uploads, stream cancellations
	closeReq     chan struct{}  // closed by the first Close
	done         chan struct{}  // closed when the Conn has ended
	dispatchDone chan struct{}  // closed when the dispatcher has exited

	nextID atomic.Uint64 // invocation and stream ids

	mu      sync.Mutex
	sess    *session // current session; nil while reconnecting or ended
	connID  string   // id of the current (or last) connection
	closing bool
	err     error // why the Conn ended; set before done is closed

	handlersMu   sync.RWMutex
	handlers     map[string][]*handler // by lower-cased target
	reconnecting []func(error)
	reconnected  []func(string)

	queue dispatchQueue
}

// Dial connects to the SignalR hub at url (for example
// "http://127.0.0.1:8080/hubs/chat"; https, ws and wss work too) and returns
// a connected Conn. Unless opts.SkipNegotiation, it first sends
// POST {url}/negotiate?negotiateVersion=1, keeping url's query and following
// redirects; then it opens the WebSocket with id=<connectionToken>, performs
// the handshake and sends one Ping. ctx bounds all of that but not the life
// of the Conn. A nil opts uses the defaults. Dial does not retry: the
// Reconnect policy applies only once connected.
func Dial(ctx context.Context, url string, opts *Options) (*Conn, error) {
	o, p, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Conn{
		url:          url,
		opts:         o,
		proto:        p,
		log:          o.Logger.With("hub_url", url, "protocol", p.Name()),
		closeReq:     make(chan struct{}),
		done:         make(chan struct{}),
		dispatchDone: make(chan struct{}),
		handlers:     make(map[string][]*handler),
	}
	c.queue.wake = make(chan struct{}, 1)
	for target, fn := range o.Handlers {
		if err := c.on(target, fn); err != nil {
			return nil, err
		}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	s, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.sess, c.connID = s, s.connID
	c.log.Debug("client: connected", "conn_id", s.connID)
	c.wg.Add(1)
	go c.run(s)
	go c.dispatchLoop()
	return c, nil
}

// ConnectionID returns the server-assigned id of the current connection
// (the last one while reconnecting or after the Conn ended). It is empty with
// SkipNegotiation. It changes on every reconnect.
func (c *Conn) ConnectionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connID
}

// Done returns a channel that is closed when the Conn has ended: after
// Close, after a server Close without reconnect, or when the connection was
// lost and no (further) reconnect was attempted.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the Conn is alive and, once Done is closed, why it
// ended: ErrClosed after Close; a *CloseError when the server sent a Close
// message (its Message and AllowReconnect as sent); ErrServerTimeout; an
// error naming the transport failure; or, after reconnecting gave up, an
// error wrapping the last failure.
func (c *Conn) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the Conn: it sends a Close message, closes the WebSocket with
// status 1000, stops reconnecting, fails pending invocations and streams
// with ErrClosed, drops handler calls not yet started, and waits for the
// goroutines of the Conn, including a handler that is running. It is
// idempotent; every call waits. It returns ctx.Err() if ctx ends first.
// Calling Close from a handler or hook blocks until ctx ends, because Close
// waits for that handler: use a ctx with a deadline there, or close from
// another goroutine that the caller owns.
func (c *Conn) Close(ctx context.Context) error {
	c.mu.Lock()
	first := !c.closing
	c.closing = true
	s := c.sess
	if first {
		c.wg.Add(1) // the closer below; added with closing set, before any Wait
	}
	c.mu.Unlock()
	if first {
		close(c.closeReq)
		if s != nil {
			if err := s.send(ctx, &protocol.Close{}); err != nil {
				c.log.Debug("client: sending Close", "err", err)
			}
		}
		// The WebSocket close handshake waits for the server (up to
		// coder/websocket's own timeouts); run it on a goroutine so that
		// ctx bounds Close.
		go func() {
			defer c.wg.Done()
			if s != nil {
				s.ws.Close(websocket.StatusNormalClosure, "")
			}
			c.cancel()
		}()
	}
	for _, ch := range []<-chan struct{}{c.done, c.dispatchDone} {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.wg.Wait()
	return nil
}

// isClosing reports whether Close has been called.
func (c *Conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// enter registers one goroutine with the Conn's WaitGroup unless Close has
// been called; the caller must call c.wg.Done when it returns true.
func (c *Conn) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	return true
}

// goTracked runs f on a goroutine joined by Close, unless Close was called.
func (c *Conn) goTracked(f func()) {
	if !c.enter() {
		return
	}
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// current returns the session to send on.
func (c *Conn) current() (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return nil, ErrClosed
	}
	select {
	case <-c.done:
		return nil, ErrClosed
	default:
	}
	if c.sess == nil {
		return nil, ErrNotConnected
	}
	return c.sess, nil
}

// newID returns the next invocation or stream id: "0", "1", ...
func (c *Conn) newID() string { return strconv.FormatUint(c.nextID.Add(1)-1, 10) }

// finish records why the Conn ended and closes done. Only run calls it.
func (c *Conn) finish(err error) {
	c.mu.Lock()
	c.sess = nil
	c.err = err
	c.mu.Unlock()
	if errors.Is(err, ErrClosed) {
		c.log.Debug("client: closed")
	} else {
		c.log.Debug("client: connection ended", "err", err)
	}
	close(c.done)
}

// run serves sessions one after the other until the Conn ends.
func (c *Conn) run(s *session) {
	defer c.wg.Done()
	for s != nil {
		err := s.serve()
		if c.isClosing() {
			s.end(ErrClosed)
			c.finish(ErrClosed)
			return
		}
		s.end(fmt.Errorf("%w: %w", ErrConnectionLost, err))
		c.mu.Lock()
		c.sess = nil
		c.mu.Unlock()
		var ce *CloseError
		if c.opts.Reconnect == nil || (errors.As(err, &ce) && !ce.AllowReconnect) {
			c.finish(err)
			return
		}
		s = c.reconnect(err)
	}
}

// reconnect tries to connect again as the policy says. It returns the new
// session, or nil after calling finish.
func (c *Conn) reconnect(cause error) *session {
	c.log.Debug("client: reconnecting", "err", cause)
	c.handlersMu.RLock()
	hooks := slices.Clone(c.reconnecting)
	c.handlersMu.RUnlock()
	if len(hooks) > 0 {
		c.dispatch(func() {
			for _, f := range hooks {
				f(cause)
			}
		})
	}
	lastErr := cause
	for attempt := 0; ; attempt++ {
		delay, ok := c.opts.Reconnect(attempt, lastErr)
		if !ok {
			c.finish(fmt.Errorf("client: reconnecting gave up after %d attempts: %w", attempt, lastErr))
			return nil
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
			}
		}
		if c.ctx.Err() != nil {
			c.finish(ErrClosed)
			return nil
		}
		ctx, cancel := context.WithTimeout(c.ctx, reconnectAttemptTimeout)
		s, err := c.connect(ctx)
		cancel()
		if err != nil {
			if c.ctx.Err() != nil {
				c.finish(ErrClosed)
				return nil
			}
			c.log.Debug("client: reconnect attempt failed", "attempt", attempt, "err", err)
			lastErr = err
			continue
		}
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			s.closeGracefully()
			s.stop()
			c.finish(ErrClosed)
			return nil
		}
		c.sess, c.connID = s, s.connID
		c.mu.Unlock()
		c.log.Debug("client: reconnected", "conn_id", s.connID)
		c.handlersMu.RLock()
		hooks := slices.Clone(c.reconnected)
		c.handlersMu.RUnlock()
		if len(hooks) > 0 {
			id := s.connID
			c.dispatch(func() {
				for _, f := range hooks {
					f(id)
				}
			})
		}
		return s
	}
}

// OnReconnecting registers f to be called, on the handler goroutine, when
// the connection was lost and automatic reconnecting starts; err is why the
// connection ended. Hooks run in registration order.
func (c *Conn) OnReconnecting(f func(err error)) {
	c.handlersMu.Lock()
	defer c.handlersMu.Unlock()
	c.reconnecting = append(c.reconnecting, f)
}

// OnReconnected registers f to be called, on the handler goroutine, after a
// successful reconnect with the new connection id. Hooks run in
// registration order.
func (c *Conn) OnReconnected(f func(connID string)) {
	c.handlersMu.Lock()
	defer c.handlersMu.Unlock()
	c.reconnected = append(c.reconnected, f)
}
