package client

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hubfabric/hubfabric/protocol"
)

// session is one physical connection (one WebSocket after one handshake).
// A Conn runs one session at a time and starts a new one on reconnect.
type session struct {
	c         *Conn
	ws        *websocket.Conn
	connID    string
	frameType websocket.MessageType

	// ctx ends when the session does; it bounds every goroutine and write
	// that belongs to the session.
	ctx    context.Context
	cancel context.CancelFunc

	start    time.Time
	lastSend atomic.Int64 // time.Since(start) of the last write, in ns

	leftover []byte // bytes after the handshake response: the first messages

	mu      sync.Mutex
	ended   bool
	endErr  error
	pending map[string]sink // invocations and streams awaiting a Completion
}

// sink receives what the server sends for one invocation id.
type sink interface {
	item(v protocol.RawValue)
	complete(m *protocol.Completion)
	fail(err error)
}

func newSession(c *Conn, ws *websocket.Conn, connID string) *session {
	s := &session{
		c:         c,
		ws:        ws,
		connID:    connID,
		frameType: websocket.MessageText,
		start:     time.Now(),
		pending:   make(map[string]sink),
	}
	if c.proto.TransferFormat() == protocol.TransferBinary {
		s.frameType = websocket.MessageBinary
	}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	return s
}

// stop cancels the session's context.
func (s *session) stop() { s.cancel() }

// handshake sends the handshake request (always a text frame) and waits for
// the response, which must come first. Bytes after it are kept in leftover.
// Then it sends the initial Ping.
func (s *session) handshake(ctx context.Context) error {
	hctx, cancel := context.WithTimeout(ctx, s.c.opts.HandshakeTimeout)
	defer cancel()
	req := protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: s.c.proto.Name(), Version: 1})
	if err := s.ws.Write(hctx, websocket.MessageText, req); err != nil {
		return fmt.Errorf("client: sending the handshake: %w", err)
	}
	var buf []byte
	for {
		_, data, err := s.ws.Read(hctx)
		if err != nil {
			if errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
				return fmt.Errorf("client: no handshake response within %v", s.c.opts.HandshakeTimeout)
			}
			return fmt.Errorf("client: waiting for the handshake response: %w", err)
		}
		buf = append(buf, data...)
		resp, n, err := protocol.ParseHandshakeResponse(buf)
		if errors.Is(err, protocol.ErrIncomplete) {
			if len(buf) > s.c.opts.MaxMessageSize {
				return errors.New("client: handshake response exceeds the maximum message size")
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("client: handshake: %w", err)
		}
		if resp.Error != "" {
			return fmt.Errorf("client: Server returned handshake error: %s", resp.Error)
		}
		if n < len(buf) {
			s.leftover = buf[n:]
		}
		break
	}
	if err := s.send(hctx, &protocol.Ping{}); err != nil {
		return err
	}
	return nil
}

// encode frames one message with the Conn's protocol.
func (s *session) encode(m protocol.Message) ([]byte, error) {
	b, err := s.c.proto.AppendMessage(nil, m)
	if err != nil {
		return nil, fmt.Errorf("client: encoding the message: %w", err)
	}
	return b, nil
}

// writeFrame writes one frame. Like every coder/websocket write, a ctx that
// ends while the frame is being written closes the WebSocket.
func (s *session) writeFrame(ctx context.Context, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.ws.Write(ctx, s.frameType, b); err != nil {
		if ctx.Err() != nil && s.ctx.Err() == nil {
			return ctx.Err()
		}
		return fmt.Errorf("client: write: %w", err)
	}
	s.lastSend.Store(int64(time.Since(s.start)))
	return nil
}

// send encodes and writes m.
func (s *session) send(ctx context.Context, m protocol.Message) error {
	b, err := s.encode(m)
	if err != nil {
		return err
	}
	return s.writeFrame(ctx, b)
}

// register adds k as the receiver of everything sent for id.
func (s *session) register(id string, k sink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return s.endErr
	}
	s.pending[id] = k
	return nil
}

func (s *session) lookup(id string) sink {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[id]
}

func (s *session) remove(id string) sink {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.pending[id]
	delete(s.pending, id)
	return k
}

// end marks the session over and fails everything still pending with err.
func (s *session) end(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.endErr = true, err
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	s.cancel()
	for _, k := range pending {
		k.fail(err)
	}
}

// closeGracefully sends a Close message and closes the WebSocket with 1000.
func (s *session) closeGracefully() {
	if err := s.send(s.ctx, &protocol.Close{}); err != nil {
		s.c.log.Debug("client: sending Close", "err", err)
	}
	s.ws.Close(websocket.StatusNormalClosure, "")
}

// serve reads until the session ends and returns why. It owns the
// keep-alive goroutine and joins it before returning.
func (s *session) serve() error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.keepAlive()
	}()
	err := s.readLoop()
	var ce *CloseError
	if errors.As(err, &ce) {
		// Answer the server's Close message with a clean close, as the JS
		// client does (bounded by coder/websocket's close handshake timeout).
		s.ws.Close(websocket.StatusNormalClosure, "")
	}
	s.cancel()
	s.ws.CloseNow()
	wg.Wait()
	return err
}

// keepAlive sends a Ping whenever nothing was sent for KeepAliveInterval.
func (s *session) keepAlive() {
	interval := s.c.opts.KeepAliveInterval
	t := time.NewTimer(interval)
	defer t.Stop()
	ping, _ := s.encode(&protocol.Ping{})
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		idle := time.Since(s.start) - time.Duration(s.lastSend.Load())
		if idle < interval {
			t.Reset(interval - idle)
			continue
		}
		if err := s.writeFrame(s.ctx, ping); err != nil {
			return // the read loop sees the broken connection
		}
		t.Reset(interval)
	}
}

// readLoop reads frames, parses records (buffering partial ones) and handles
// each message until the connection ends.
func (s *session) readLoop() error {
	buf := s.leftover
	s.leftover = nil
	if err := s.process(&buf); err != nil {
		return err
	}
	for {
		rctx, cancel := context.WithTimeout(s.ctx, s.c.opts.ServerTimeout)
		_, data, err := s.ws.Read(rctx)
		timedOut := errors.Is(rctx.Err(), context.DeadlineExceeded)
		cancel()
		if err != nil {
			switch {
			case s.ctx.Err() != nil:
				return ErrClosed
			case timedOut:
				return ErrServerTimeout
			}
			return fmt.Errorf("client: connection lost: %w", err)
		}
		if len(buf) == 0 {
			buf = data
		} else {
			// Never append into memory that earlier RawValues may share.
			buf = append(buf[:len(buf):len(buf)], data...)
		}
		if err := s.process(&buf); err != nil {
			return err
		}
	}
}

// process handles every complete record in *buf and leaves the rest there.
func (s *session) process(buf *[]byte) error {
	if len(*buf) == 0 {
		return nil
	}
	msgs, n, perr := s.c.proto.ParseMessages(*buf, s.c.opts.MaxMessageSize)
	for _, m := range msgs {
		if err := s.handle(m); err != nil {
			return err
		}
	}
	if perr != nil {
		return fmt.Errorf("client: invalid data from the server: %w", perr)
	}
	*buf = (*buf)[n:]
	if len(*buf) == 0 {
		*buf = nil
	}
	return nil
}

// handle acts on one message from the server. A non-nil error ends the
// session.
func (s *session) handle(m protocol.Message) error {
	switch m := m.(type) {
	case *protocol.Ping:
	case *protocol.Invocation:
		s.c.dispatch(func() { s.c.runHandlers(s, m) })
	case *protocol.StreamItem:
		if k := s.lookup(m.InvocationID); k != nil {
			raw, _ := m.Item.(protocol.RawValue)
			k.item(raw)
		}
	case *protocol.Completion:
		if k := s.remove(m.InvocationID); k != nil {
			k.complete(m)
		}
	case *protocol.Close:
		return &CloseError{Message: m.Error, AllowReconnect: m.AllowReconnect}
	default:
		s.c.log.Debug("client: ignoring message", "type", m.MessageType())
	}
	return nil
}

// upload sends the values received from ch as StreamItems for id, then a
// Completion when ch is closed. It stops when the session ends.
func (s *session) upload(id string, ch reflect.Value) {
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: ch},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.ctx.Done())},
	}
	for {
		chosen, v, ok := reflect.Select(cases)
		if chosen == 1 {
			return
		}
		if !ok {
			if err := s.send(s.ctx, &protocol.Completion{InvocationID: id}); err != nil {
				s.c.log.Debug("client: ending upload stream", "stream_id", id, "err", err)
			}
			return
		}
		b, err := s.encode(&protocol.StreamItem{InvocationID: id, Item: v.Interface()})
		if err != nil {
			s.c.log.Warn("client: upload stream item", "stream_id", id, "err", err)
			if err := s.send(s.ctx, &protocol.Completion{InvocationID: id, Error: err.Error()}); err != nil {
				s.c.log.Debug("client: ending upload stream", "stream_id", id, "err", err)
			}
			return
		}
		if err := s.writeFrame(s.ctx, b); err != nil {
			return
		}
	}
}
