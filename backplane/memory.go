package backplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// MemoryQueueLimit is how many messages a Memory holds for its Handler before
// it drops new ones. A message that arrives at a full queue is dropped and
// its channel is reported in an EventGap once the queue has room again, so
// overflow is never silent. Events do not count toward the limit.
const MemoryQueueLimit = 1 << 16

// errUnavailableInjected is the cause reported while SetAvailable(false) is
// in force.
var errUnavailableInjected = fmt.Errorf("memory: made unavailable by SetAvailable(false): %w", ErrUnavailable)

// errStartedTwice is returned by a second Start.
var errStartedTwice = errors.New("backplane: Start called twice")

// MemoryBus is an in-process stand-in for a Redis server: every Memory made
// by NewBackplane on one bus sees the others' publications, exactly as nodes
// sharing one Redis do (several nodes in one test or one program). The
// testkit has its own simulated bus, driven by its scheduler.
//
// The zero value is not usable; call NewMemoryBus. A MemoryBus holds no
// goroutines and needs no closing; its backplanes are closed individually.
type MemoryBus struct {
	mu      sync.RWMutex
	subs    map[string]map[*Memory]struct{} // channel -> subscribed backplanes
	secrets map[string][]byte               // SharedSecret's values, under mu
	pub     sync.Mutex                      // serializes Publish's fan-out
}

// NewMemoryBus returns an empty bus.
func NewMemoryBus() *MemoryBus {
	return &MemoryBus{subs: make(map[string]map[*Memory]struct{})}
}

// NewBackplane returns a Memory attached to b. Call Start before using it.
func (b *MemoryBus) NewBackplane() *Memory {
	m := &Memory{
		bus:        b,
		subscribed: make(map[string]struct{}),
		available:  true,
		limit:      MemoryQueueLimit,
		done:       make(chan struct{}),
	}
	m.wake = sync.NewCond(&m.mu)
	return m
}

// Memory is the in-process Backplane, the default of every node: with
// NewMemory it connects a node to nothing but itself, and with
// MemoryBus.NewBackplane it connects the nodes of one process (the testkit
// runs whole clusters this way).
//
// Outgrow it as soon as nodes run in more than one process: Memory cannot
// cross a process boundary, so a multi-process deployment needs the Redis
// backplane (backplane/redis).
//
// Memory follows the Backplane contract, and also:
//   - Delivery runs on one goroutine per Memory, started by Start and
//     stopped and joined by Close, which reads a FIFO queue; Publish only
//     appends to the subscribers' queues and never waits for a Handler. A
//     queue holds up to MemoryQueueLimit messages; beyond that, messages are
//     dropped and reported with EventGap.
//   - Every subscriber gets its own copy of each payload, so the payload is
//     the handler's to keep or modify, and the caller of Publish may reuse
//     its slices as soon as Publish returns.
//   - Unsubscribe also waits for a HandleMessage call in progress on one of
//     its channels to return, so nothing on those channels reaches the
//     Handler once it returns. Consequently a Handler must not call Close, or
//     Unsubscribe for the channel it is handling, on the Memory that is
//     calling it: that would wait for itself.
//   - SetAvailable simulates losing and regaining the transport, for tests.
type Memory struct {
	bus *MemoryBus

	mu         sync.Mutex
	wake       *sync.Cond // signalled when queue, lost or closed change
	h          Handler
	started    bool
	closed     bool
	available  bool
	subscribed map[string]struct{}
	queue      []item
	queued     int                 // messages (not events) in queue
	limit      int                 // max queued messages
	lost       map[string]struct{} // channels with messages dropped on overflow, not yet reported
	// inflight is the channel of the HandleMessage call in progress, if
	// inflightSet; an Unsubscribe of that channel waits on inflightDone.
	inflight     string
	inflightSet  bool
	inflightDone chan struct{} // made on demand, closed when the call returns

	done chan struct{} // closed when the delivery goroutine has returned
}

// item is one queued delivery: a message, or an event when isEvent.
type item struct {
	isEvent bool
	event   Event
	channel string
	payload []byte
}

// Memory is a Backplane and knows its Audience.
var _ Backplane = (*Memory)(nil)
var _ Audience = (*Memory)(nil)

// NewMemory returns a Memory on a private bus of its own: the single-node
// default, where a node hears only its own publications.
func NewMemory() *Memory {
	return NewMemoryBus().NewBackplane()
}

// Start begins delivering to h from a goroutine that Close stops. Messages
// and events queued before Start are delivered after it.
func (m *Memory) Start(ctx context.Context, h Handler) error {
	if h == nil {
		return errors.New("backplane: Start with a nil Handler")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return ErrClosed
	case m.started:
		return errStartedTwice
	}
	m.h = h
	m.started = true
	go m.deliver()
	return nil
}

// Publish appends each message to the queue of every Memory on the bus
// subscribed to its channel, including m itself, and returns without
// waiting for any Handler.
func (m *Memory) Publish(ctx context.Context, msgs []Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := m.bus
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := m.usable(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	// One publisher at a time: every subscriber's queue gets the messages
	// of a channel in the same order (ChannelOrder).
	b.pub.Lock()
	defer b.pub.Unlock()
	for _, msg := range msgs {
		for sub := range b.subs[msg.Channel] {
			sub.enqueue(msg.Channel, bytes.Clone(msg.Payload))
		}
	}
	return nil
}

// OneOrderPerChannel implements backplane.ChannelOrder: always true, since
// publishes are serialized on the bus.
func (m *Memory) OneOrderPerChannel() bool { return true }

// OthersSubscribed implements Audience: whether another Memory on m's bus
// is subscribed to channel. On a private bus (NewMemory) it is false, so a
// single node never publishes. While m is unavailable (SetAvailable) it
// is true: like a Redis client cut off from its server, m cannot know, so
// a publish is attempted and fails loudly.
func (m *Memory) OthersSubscribed(channel string) bool {
	b := m.bus
	b.mu.RLock()
	defer b.mu.RUnlock()
	if m.usable() != nil {
		return true
	}
	subs := b.subs[channel]
	_, self := subs[m]
	if self {
		return len(subs) > 1
	}
	return len(subs) > 0
}

// Subscribe adds channels; messages published on them after it returns are
// delivered.
func (m *Memory) Subscribe(ctx context.Context, channels ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := m.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	// While unavailable the change is kept (nothing is delivered to m until
	// it is back, and the EventGap then names these channels), as the
	// Redis backplane keeps it; the caller still learns it is not in effect.
	for _, ch := range channels {
		m.subscribed[ch] = struct{}{}
		subs := b.subs[ch]
		if subs == nil {
			subs = make(map[*Memory]struct{})
			b.subs[ch] = subs
		}
		subs[m] = struct{}{}
	}
	if err := m.usableLocked(); err != nil {
		return fmt.Errorf("subscribe: %w; kept and made when the backplane is back", err)
	}
	return nil
}

// Unsubscribe removes channels. Messages on them still queued are discarded,
// and a HandleMessage call in progress on one of them is waited for (until
// ctx is done), so once Unsubscribe returns nil the Handler hears nothing
// more on those channels.
func (m *Memory) Unsubscribe(ctx context.Context, channels ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	wait, err := m.unsubscribe(channels)
	if err != nil || wait == nil {
		return err
	}
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unsubscribe removes channels and returns a channel to wait on if a
// HandleMessage call on one of them is in progress, or nil.
func (m *Memory) unsubscribe(channels []string) (<-chan struct{}, error) {
	b := m.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	// While unavailable the change is kept, as for Subscribe (messages on
	// these channels still queued are discarded at delivery), and the call
	// returns at once with the error: a HandleMessage in progress on them is
	// not waited for, since the caller learns the change is not confirmed.
	unavailable := m.usableLocked()
	var wait bool
	for _, ch := range channels {
		if _, ok := m.subscribed[ch]; !ok {
			continue
		}
		delete(m.subscribed, ch)
		if subs := b.subs[ch]; subs != nil {
			delete(subs, m)
			if len(subs) == 0 {
				delete(b.subs, ch)
			}
		}
		if m.inflightSet && m.inflight == ch {
			wait = true
		}
	}
	if unavailable != nil {
		return nil, fmt.Errorf("unsubscribe: %w; kept for when the backplane is back", unavailable)
	}
	if !wait {
		return nil, nil
	}
	if m.inflightDone == nil {
		m.inflightDone = make(chan struct{})
	}
	return m.inflightDone, nil
}

// Close stops delivery, waits for a Handler call in progress to return and
// detaches m from its bus. It is idempotent and always returns nil; every
// call returns only once delivery has stopped.
func (m *Memory) Close() error {
	b := m.bus
	b.mu.Lock()
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		for ch := range m.subscribed {
			if subs := b.subs[ch]; subs != nil {
				delete(subs, m)
				if len(subs) == 0 {
					delete(b.subs, ch)
				}
			}
		}
		m.subscribed = nil
		m.queue = nil
		m.queued = 0
		m.lost = nil
		m.wake.Broadcast()
	}
	started := m.started
	m.mu.Unlock()
	b.mu.Unlock()
	if started {
		<-m.done
	}
	return nil
}

// SetAvailable simulates the transport going away (false) and coming back
// (true), for tests; repeating the current state does nothing.
//
// While unavailable, Publish, Subscribe and Unsubscribe return an error
// wrapping ErrUnavailable; a publish takes no effect, while subscription
// changes are kept for the recovery, and messages published by anyone on
// the bus are lost for m. Messages queued before the outage are still
// delivered, then the Handler gets EventDown. When available again, the
// Handler gets EventGap naming every subscribed channel (omitted when
// there is none), then EventRestored; subscriptions survive the outage.
func (m *Memory) SetAvailable(ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.available == ok {
		return
	}
	m.available = ok
	if !ok {
		m.pushEvent(Event{Kind: EventDown, Err: errUnavailableInjected})
		return
	}
	if len(m.subscribed) > 0 {
		m.pushEvent(Event{Kind: EventGap, Channels: sortedKeys(m.subscribed)})
	}
	m.pushEvent(Event{Kind: EventRestored})
}

// usable reports why m cannot take an operation now, or nil.
func (m *Memory) usable() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.usableLocked()
}

func (m *Memory) usableLocked() error {
	switch {
	case m.closed:
		return ErrClosed
	case !m.available:
		return errUnavailableInjected
	}
	return nil
}

// enqueue queues a message for m's Handler. It is called with the bus lock
// held (read or write), which is what keeps it from racing with Subscribe.
func (m *Memory) enqueue(channel string, payload []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || !m.available {
		return
	}
	if m.queued >= m.limit {
		if m.lost == nil {
			m.lost = make(map[string]struct{})
		}
		m.lost[channel] = struct{}{}
		return
	}
	// Report earlier overflow before anything that follows it.
	m.flushLostLocked()
	m.queue = append(m.queue, item{channel: channel, payload: payload})
	m.queued++
	m.wake.Signal()
}

func (m *Memory) pushEvent(e Event) {
	m.flushLostLocked()
	m.queue = append(m.queue, item{isEvent: true, event: e})
	m.wake.Signal()
}

// flushLostLocked queues an EventGap for the channels that overflowed.
func (m *Memory) flushLostLocked() {
	if len(m.lost) == 0 {
		return
	}
	m.queue = append(m.queue, item{isEvent: true, event: Event{Kind: EventGap, Channels: sortedKeys(m.lost)}})
	m.lost = nil
	m.wake.Signal()
}

// deliver is the delivery goroutine: the only caller of the Handler.
func (m *Memory) deliver() {
	defer close(m.done)
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		for !m.closed && len(m.queue) == 0 && len(m.lost) == 0 {
			m.wake.Wait()
		}
		if m.closed {
			return
		}
		if len(m.queue) == 0 {
			// Overflowed while the Handler caught up, and nothing since.
			m.flushLostLocked()
		}
		it := m.queue[0]
		m.queue[0] = item{}
		m.queue = m.queue[1:]
		if len(m.queue) == 0 {
			m.queue = nil // let the backing array go
		}
		if it.isEvent {
			m.mu.Unlock()
			m.h.HandleEvent(it.event)
			m.mu.Lock()
			continue
		}
		m.queued--
		if _, ok := m.subscribed[it.channel]; !ok {
			continue // unsubscribed after it was queued
		}
		m.inflight, m.inflightSet = it.channel, true
		m.mu.Unlock()
		m.h.HandleMessage(it.channel, it.payload)
		m.mu.Lock()
		m.inflight, m.inflightSet = "", false
		if m.inflightDone != nil {
			close(m.inflightDone)
			m.inflightDone = nil
		}
	}
}

func sortedKeys(set map[string]struct{}) []string {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
