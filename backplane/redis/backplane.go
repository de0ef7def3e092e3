// Package redisbp is the Redis backplane: nodes in different processes
// exchange messages through Redis pub/sub (classic or sharded, standalone,
// Sentinel or Cluster). It is the only package of the module that imports
// go-redis.
//
// A Backplane follows the backplane.Backplane contract (it passes
// backplanetest) and adds:
//
//   - Sharded pub/sub by default (Redis >= 7, always on a cluster): channels
//     are hash-tagged into Options.Partitions partitions, one subscription
//     connection per partition, so a cluster's throughput grows with it.
//   - Publish is one pipeline per call, bounded by ctx and
//     Options.PublishTimeout; a failure wraps backplane.ErrUnavailable.
//   - Subscribe returns once Redis confirmed the subscription. While Redis
//     is down it records the channel, returns ErrUnavailable, and the
//     channel is subscribed when Redis comes back.
//   - go-redis reconnects and resubscribes silently; the Backplane watches
//     the subscription confirmations and reports every reconnection as
//     EventDown (unless already down), EventGap naming the channels, and
//     EventRestored once every subscription is confirmed and a probe has
//     made the round trip through every subscription connection.
//   - Every Options.ProbeInterval it pings Redis and publishes a probe on a
//     private channel of each subscription connection. A connection whose
//     probes stop arriving while it is idle (connected but deaf) is
//     replaced and its channels reported in an EventGap.
//   - A slow Handler holds up delivery; Redis then disconnects the
//     subscriber when its client-output-buffer-limit for pubsub is
//     exceeded, and the reconnection is reported as a gap. Messages are
//     never dropped silently inside the process.
//
// The Handler is called from one goroutine at a time. It must not call
// Close, Subscribe or Unsubscribe of the Backplane calling it: they wait for
// deliveries, which would wait for the Handler.
package redisbp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubfabric/hubfabric/backplane"
)

// Backplane is a backplane.Backplane over Redis pub/sub. Make it with New or
// NewFromString, then Start it. All methods are safe for concurrent use.
type Backplane struct {
	client  redis.UniversalClient
	owned   bool // client made by NewFromString, closed by Close
	cluster bool
	opts    Options
	log     *slog.Logger
	id      string // random, names this backplane's probe channels

	stats struct {
		published, publishErrors, gaps, probesFailed, reconnects, delivered, audienceShort atomic.Uint64
	}

	mu      sync.Mutex
	started bool
	closed  bool
	h       backplane.Handler
	mode    int                 // modeUnknown, modeSharded or modeClassic
	shards  map[int]*shard      // by partition (0 in classic mode)
	pending map[string]struct{} // channels subscribed before the mode was known

	// The audience of each partition (presence.go), under mu.
	expected map[int]int64     // presence subscribers a publish needs
	holding  map[int]time.Time // since when a drop of the count is held
	serverID map[int]string    // run_id of the partition's server at the last round

	// dmu serializes Handler calls and orders events; the fields below it
	// change only with dmu held.
	dmu     sync.Mutex
	dclosed bool   // no Handler call starts any more
	down    bool   // EventDown reported, EventRestored not yet
	downSeq uint64 // probe round every shard must see before EventRestored

	downFlag   atomic.Bool // mirrors down, for reads without dmu
	probeSeq   atomic.Uint64
	pubFailure atomic.Pointer[error] // last publish failure not yet reported
	wake       chan struct{}         // cap 1: run a health round now
	stop       chan struct{}         // closed by Close
	ctx        context.Context       // cancelled by Close; bounds background work
	cancel     context.CancelFunc
	closeDone  chan struct{}  // closed when Close has finished
	wg         sync.WaitGroup // health and reader goroutines
}

const (
	modeUnknown = iota
	modeSharded
	modeClassic
)

// reconnectPause is how long a subscription reader waits after its second
// failed read in a row before it reads (and so reconnects) again.
const reconnectPause = 100 * time.Millisecond

// Backplane is a backplane.Backplane.
var _ backplane.Backplane = (*Backplane)(nil)

// Stats are a Backplane's counters since New.
type Stats struct {
	Published     uint64 // messages handed to Redis by Publish
	PublishErrors uint64 // failed Publish calls
	Delivered     uint64 // messages passed to the Handler
	Gaps          uint64 // EventGap reports
	ProbesFailed  uint64 // subscription connections replaced because probes stopped arriving
	Reconnects    uint64 // subscription connections re-established (by go-redis or by the probe)
	// AudienceShort counts failed Publish calls (also in PublishErrors)
	// that reached Redis while a node subscribed before a drop had not
	// resubscribed: the messages may have reached some nodes, but the
	// caller was told they were not delivered.
	AudienceShort uint64
}

// Stats returns the counters; each is read atomically.
func (b *Backplane) Stats() Stats {
	return Stats{
		Published:     b.stats.published.Load(),
		PublishErrors: b.stats.publishErrors.Load(),
		Delivered:     b.stats.delivered.Load(),
		Gaps:          b.stats.gaps.Load(),
		ProbesFailed:  b.stats.probesFailed.Load(),
		Reconnects:    b.stats.reconnects.Load(),
		AudienceShort: b.stats.audienceShort.Load(),
	}
}

// New returns a Backplane using client, which the caller built (for
// example with Options.NewClient) and keeps owning: Close does not close
// it, so close it after closing every Backplane using it. Of opts, the
// client-building fields (Addrs, Username, Password, TLS, SentinelMaster,
// DB) are ignored; the others apply.
func New(client redis.UniversalClient, opts Options) (*Backplane, error) {
	if client == nil {
		return nil, errors.New("redisbp: New with a nil client")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	cluster := isCluster(client)
	b := &Backplane{
		client:    client,
		cluster:   cluster,
		opts:      opts,
		log:       opts.Logger.With("backplane", "redis"),
		id:        hex.EncodeToString(idb[:]),
		shards:    make(map[int]*shard),
		pending:   make(map[string]struct{}),
		expected:  make(map[int]int64),
		holding:   make(map[int]time.Time),
		serverID:  make(map[int]string),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		closeDone: make(chan struct{}),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	switch {
	case opts.Sharded == ShardedOn || (opts.Sharded == ShardedAuto && cluster):
		b.mode = modeSharded
	case opts.Sharded == ShardedOff:
		b.mode = modeClassic
	}
	return b, nil
}

// OneOrderPerChannel implements backplane.ChannelOrder. One Redis server
// (and one shard of a cluster, with sharded pub/sub) delivers a channel's
// messages to every subscriber in the order it executed the publishes.
// Classic pub/sub on a cluster does not: a message published on one node
// reaches the others over the cluster bus, so two publishers' messages may
// arrive in different orders on different nodes. Until the mode is known
// (the first command), it answers as the mode will be on a cluster:
// sharded unless ShardedOff.
func (b *Backplane) OneOrderPerChannel() bool {
	if !b.cluster {
		return true
	}
	return b.currentMode() == modeSharded || (b.currentMode() == modeUnknown && b.opts.Sharded != ShardedOff)
}

// NewFromString parses s with ParseConnectionString, applies overrides to
// the Options in order, and returns a Backplane that owns its client:
// Close closes it.
func NewFromString(s string, overrides ...func(*Options)) (*Backplane, error) {
	opts, err := ParseConnectionString(s)
	if err != nil {
		return nil, err
	}
	for _, f := range overrides {
		f(&opts)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	client := opts.NewClient()
	b, err := New(client, opts)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	b.owned = true
	return b, nil
}

// Start begins delivering to h. With Options.AbortConnect it first checks
// that Redis answers within ConnectTimeout and fails otherwise; without it,
// Start succeeds while Redis is down and the Handler gets EventDown.
func (b *Backplane) Start(ctx context.Context, h backplane.Handler) error {
	if h == nil {
		return errors.New("redis backplane: Start with a nil Handler")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return backplane.ErrClosed
	case b.started:
		b.mu.Unlock()
		return errors.New("redis backplane: Start called twice")
	}
	b.started = true
	b.h = h
	b.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, b.opts.ConnectTimeout)
	defer cancel()
	err := b.client.Ping(cctx).Err()
	if err == nil {
		_, err = b.resolveMode(cctx)
	}
	if err != nil && b.opts.AbortConnect {
		b.mu.Lock()
		b.started = false // nothing runs; Close has nothing to stop
		b.mu.Unlock()
		return fmt.Errorf("redis backplane: start: Redis at %s unreachable within %v (abortConnect=true): %w: %w",
			strings.Join(b.opts.Addrs, ","), b.opts.ConnectTimeout, backplane.ErrUnavailable, err)
	}
	if err != nil {
		b.log.Warn("redis unreachable at start; will keep trying", "err", err)
	}
	b.wg.Add(1)
	go b.health()
	return nil
}

// Publish sends msgs in one pipeline, in order: SPUBLISH in sharded mode,
// PUBLISH otherwise, after counting each partition's subscribed backplanes
// (presence.go). It returns nil once Redis accepted every message with
// every expected backplane subscribed, and
// otherwise an error wrapping backplane.ErrUnavailable (and ctx's error if
// ctx ended), in which case no message should be assumed delivered. It
// never blocks past ctx's deadline or Options.PublishTimeout. The caller may
// reuse the payloads once Publish returns.
func (b *Backplane) Publish(ctx context.Context, msgs []backplane.Message) (err error) {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis backplane: publish: %w", err)
	}
	if b.isClosed() {
		return backplane.ErrClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	defer func() {
		if err != nil {
			b.stats.publishErrors.Add(1)
		}
	}()
	pctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	mode, err := b.resolveMode(pctx)
	if err != nil {
		return b.publishFailed(ctx, len(msgs), err)
	}
	pipe := b.client.Pipeline()
	var counts map[int]*redis.MapStringIntCmd
	if b.counted(mode) {
		// Counted first: a message published after a full count reaches
		// every backplane counted (presence.go).
		counts = make(map[int]*redis.MapStringIntCmd)
		for _, p := range b.partitionsOf(mode, msgs) {
			counts[p] = b.queueCount(pctx, pipe, mode, p)
		}
	}
	for _, m := range msgs {
		if mode == modeSharded {
			pipe.SPublish(pctx, b.prefix(true, b.partition(m.Channel))+m.Channel, m.Payload)
		} else {
			pipe.Publish(pctx, b.opts.ChannelPrefix+m.Channel, m.Payload)
		}
	}
	if _, err := pipe.Exec(pctx); err != nil {
		return b.publishFailed(ctx, len(msgs), err)
	}
	if err := b.checkAudience(pctx, mode, counts); err != nil {
		b.stats.audienceShort.Add(1)
		b.poke() // a round tells a node gone from a node not yet back
		return err
	}
	b.stats.published.Add(uint64(len(msgs)))
	return nil
}

func (b *Backplane) publishFailed(ctx context.Context, n int, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("redis backplane: publish %d message(s): %w: %w", n, ctx.Err(), err)
	}
	b.pubFailure.Store(&err)
	b.poke()
	return fmt.Errorf("redis backplane: publish %d message(s): %w: %w", n, backplane.ErrUnavailable, err)
}

// Subscribe subscribes to channels and returns once Redis confirmed every
// one, or with an error wrapping backplane.ErrUnavailable if that did not
// happen within Options.ConnectTimeout (or ctx's error). Either way the
// channels stay wanted: those not confirmed are subscribed as soon as Redis
// answers again. It is idempotent per channel.
func (b *Backplane) Subscribe(ctx context.Context, channels ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis backplane: subscribe: %w", err)
	}
	if b.isClosed() {
		return backplane.ErrClosed
	}
	if len(channels) == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, b.opts.ConnectTimeout)
	defer cancel()
	mode, err := b.resolveMode(wctx)
	if err != nil {
		b.mu.Lock()
		for _, c := range channels {
			b.pending[c] = struct{}{}
		}
		b.mu.Unlock()
		return b.subscribeFailed(ctx, err)
	}
	waits, err := b.subscribe(wctx, mode, channels)
	if err != nil {
		return b.subscribeFailed(ctx, err)
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-wctx.Done():
			return b.subscribeFailed(ctx, fmt.Errorf("no confirmation from Redis within %v", b.opts.ConnectTimeout))
		case <-b.stop:
			return backplane.ErrClosed
		}
	}
	return nil
}

func (b *Backplane) subscribeFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("redis backplane: subscribe: %w: %w", ctx.Err(), err)
	}
	if b.isClosed() {
		return backplane.ErrClosed
	}
	return fmt.Errorf("redis backplane: subscribe: %w (the subscription will be made when Redis is back): %w", backplane.ErrUnavailable, err)
}

// subscribe adds channels to their shards and sends the subscribe
// commands; it returns what to wait on for their confirmations.
func (b *Backplane) subscribe(ctx context.Context, mode int, channels []string) ([]<-chan struct{}, error) {
	byPart := make(map[int][]string)
	for _, c := range channels {
		p := 0
		if mode == modeSharded {
			p = b.partition(c)
		}
		byPart[p] = append(byPart[p], c)
	}
	var waits []<-chan struct{}
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(byPart)) {
		s, err := b.shard(mode, p)
		if err != nil {
			return nil, err
		}
		w, err := s.subscribe(ctx, byPart[p])
		waits = append(waits, w...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return waits, errors.Join(errs...)
}

// Unsubscribe removes channels; unknown ones are ignored. Once it returns,
// the Handler gets nothing more on them: a delivery in progress is waited
// for. It returns nil even if Redis could not be told (then the messages
// still arriving are discarded, and the channels are not resubscribed).
func (b *Backplane) Unsubscribe(ctx context.Context, channels ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis backplane: unsubscribe: %w", err)
	}
	if b.isClosed() {
		return backplane.ErrClosed
	}
	b.mu.Lock()
	mode := b.mode
	byShard := make(map[*shard][]string)
	for _, c := range channels {
		delete(b.pending, c)
		p := 0
		if mode == modeSharded {
			p = b.partition(c)
		}
		if s := b.shards[p]; s != nil {
			byShard[s] = append(byShard[s], c)
		}
	}
	b.mu.Unlock()
	for s, cs := range byShard {
		s.forget(cs)
	}
	// Wait for a delivery in progress: from here on, deliveries check the
	// shards' desired sets, which no longer hold the channels.
	b.dmu.Lock()
	b.dmu.Unlock() //nolint:staticcheck // an empty critical section is the barrier
	uctx, cancel := context.WithTimeout(ctx, b.opts.ConnectTimeout)
	defer cancel()
	for s, cs := range byShard {
		if err := s.unsubscribe(uctx, cs); err != nil {
			b.log.Debug("unsubscribe not sent to Redis", "err", err)
		}
	}
	return nil
}

// Close stops delivery and the background goroutines, closes the
// subscription connections and, if NewFromString made it, the client. It
// is idempotent; every call returns once all of that is done. It must not be
// called from the Handler.
func (b *Backplane) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.closeDone
		return nil
	}
	b.closed = true
	shards := slices.Collect(maps.Values(b.shards))
	b.mu.Unlock()

	close(b.stop)
	b.cancel()
	b.dmu.Lock()
	b.dclosed = true // waits for a Handler call in progress
	b.dmu.Unlock()
	for _, s := range shards {
		s.close()
	}
	b.wg.Wait()
	var err error
	if b.owned {
		err = b.client.Close()
	}
	close(b.closeDone)
	return err
}

func (b *Backplane) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *Backplane) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// partition returns the hash-tag partition of a channel in sharded mode.
func (b *Backplane) partition(channel string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(channel))
	return int(h.Sum32() % uint32(b.opts.Partitions))
}

// prefix returns the Redis channel name prefix of partition p: "{p<N>}" and
// ChannelPrefix in sharded mode, ChannelPrefix alone in classic mode.
func (b *Backplane) prefix(sharded bool, p int) string {
	if sharded {
		return "{p" + strconv.Itoa(p) + "}" + b.opts.ChannelPrefix
	}
	return b.opts.ChannelPrefix
}

func (b *Backplane) currentMode() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mode
}

// resolveMode returns the pub/sub mode, asking the server for its version
// the first time in ShardedAuto mode on a non-cluster client.
func (b *Backplane) resolveMode(ctx context.Context) (int, error) {
	if m := b.currentMode(); m != modeUnknown {
		return m, nil
	}
	info, err := b.client.Info(ctx, "server").Result()
	if err != nil {
		return modeUnknown, err
	}
	mode := modeClassic
	for line := range strings.Lines(info) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:")
		if !ok {
			continue
		}
		major, _, _ := strings.Cut(v, ".")
		if n, err := strconv.Atoi(major); err == nil && n >= 7 {
			mode = modeSharded
		}
	}
	b.mu.Lock()
	if b.mode == modeUnknown {
		b.mode = mode
		b.log.Info("pub/sub mode chosen", "sharded", mode == modeSharded)
	}
	mode = b.mode
	b.mu.Unlock()
	return mode, nil
}

// shard returns the shard of partition p, making it if needed; its
// subscription connection is made by its first subscribe.
func (b *Backplane) shard(mode, p int) (*shard, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, backplane.ErrClosed
	}
	if s := b.shards[p]; s != nil {
		return s, nil
	}
	s := newShard(b, mode == modeSharded, p)
	b.shards[p] = s
	return s, nil
}

// deliver passes one message to the Handler unless the backplane is closed
// or s no longer wants the channel.
func (b *Backplane) deliver(s *shard, channel string, payload []byte) {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	if b.dclosed || !s.wants(channel) {
		return
	}
	b.stats.delivered.Add(1)
	b.h.HandleMessage(channel, payload)
}

// emitLocked passes an event to the Handler; dmu is held.
func (b *Backplane) emitLocked(ev backplane.Event) {
	if b.dclosed {
		return
	}
	b.h.HandleEvent(ev)
}

// markDownLocked reports EventDown unless already down; dmu is held.
func (b *Backplane) markDownLocked(err error) {
	if b.down || b.dclosed {
		return
	}
	b.down = true
	b.downFlag.Store(true)
	b.downSeq = b.probeSeq.Load() + 1
	b.log.Warn("redis backplane down", "err", err)
	b.emitLocked(backplane.Event{Kind: backplane.EventDown, Err: fmt.Errorf("redis backplane: %w: %w", backplane.ErrUnavailable, err)})
}

// reconnected reports that s's subscription connection was re-established:
// EventDown if not yet reported, then EventGap with the channels of s.
func (b *Backplane) reconnected(s *shard, why error) {
	b.stats.reconnects.Add(1)
	b.dmu.Lock()
	b.markDownLocked(why)
	chans := s.desiredList()
	if len(chans) > 0 && !b.dclosed {
		b.stats.gaps.Add(1)
		b.log.Warn("redis backplane gap: subscription re-established, messages may have been missed",
			"channels", len(chans), "partition", s.part)
		b.emitLocked(backplane.Event{Kind: backplane.EventGap, Channels: chans})
	}
	b.dmu.Unlock()
	b.poke()
}

// errReconnected is the EventDown cause when a reconnection is noticed
// before any failed ping or publish.
var errReconnected = errors.New("subscription connection was re-established by the client")
