package redisbp

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubfabric/hubfabric/backplane"
)

// downProbeInterval caps the probe interval while the backplane is down, so
// a restoration is noticed quickly.
const downProbeInterval = 100 * time.Millisecond

// health is the goroutine that watches the connection: every ProbeInterval
// (or when woken by a failed publish or a probe arriving during an outage)
// it runs one round. Close stops it.
func (b *Backplane) health() {
	defer b.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-timer.C:
		case <-b.wake:
		}
		b.round()
		d := b.opts.ProbeInterval
		if b.downFlag.Load() || b.currentMode() == modeUnknown || b.isHolding() {
			d = min(d, downProbeInterval)
		}
		timer.Reset(d)
	}
}

// round reports a publish failure as EventDown, pings Redis, subscribes
// channels left pending while the mode was unknown, publishes one probe per
// subscription connection, replaces deaf connections and, when down,
// reports EventRestored once everything is back.
func (b *Backplane) round() {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.PublishTimeout)
	defer cancel()
	if p := b.pubFailure.Swap(nil); p != nil {
		b.markDown(*p)
	}
	if err := b.client.Ping(ctx).Err(); err != nil {
		b.markDown(err)
		return
	}
	mode, err := b.resolveMode(ctx)
	if err != nil {
		b.markDown(err)
		return
	}
	b.mu.Lock()
	pending := slices.Collect(maps.Keys(b.pending))
	clear(b.pending)
	shards := slices.Collect(maps.Values(b.shards))
	b.mu.Unlock()
	if len(pending) > 0 {
		// The shards remember the channels even if this fails; the
		// confirmations are awaited by maybeRestore, not here.
		if _, err := b.subscribe(ctx, mode, pending); err != nil {
			b.log.Debug("subscribing channels pending since the outage", "err", err)
		}
		b.mu.Lock()
		shards = slices.Collect(maps.Values(b.shards))
		b.mu.Unlock()
	}

	seq := b.probeSeq.Add(1)
	now := time.Now()
	if len(shards) > 0 {
		payload := strconv.FormatUint(seq, 10)
		pipe := b.client.Pipeline()
		for _, s := range shards {
			if s.sharded {
				pipe.SPublish(ctx, s.probe, payload)
			} else {
				pipe.Publish(ctx, s.probe, payload)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.markDown(err)
			return
		}
		for _, s := range shards {
			s.noteSent(seq, now)
		}
		for _, s := range shards {
			if s.deaf(now, b.opts.ProbeTimeout) {
				b.stats.probesFailed.Add(1) // the reconnection is counted when confirmed
				b.log.Warn("subscription connection receives nothing; replacing it",
					"partition", s.part, "probe_timeout", b.opts.ProbeTimeout)
				s.replace(b.ctx)
			}
		}
	}
	b.maybeRestore()
	if err := b.measureAudience(ctx, mode, now); err != nil {
		b.log.Debug("counting subscribed nodes", "err", err)
	}
}

func (b *Backplane) isHolding() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.holding) > 0
}

func (b *Backplane) markDown(err error) {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	b.markDownLocked(err)
}

// maybeRestore reports EventRestored if the backplane is down and every
// subscription is confirmed and has carried a probe sent after the outage
// began.
func (b *Backplane) maybeRestore() {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	if !b.down || b.dclosed {
		return
	}
	b.mu.Lock()
	shards := slices.Collect(maps.Values(b.shards))
	pending := len(b.pending)
	b.mu.Unlock()
	if pending > 0 {
		return
	}
	for _, s := range shards {
		if !s.restoredSince(b.downSeq) {
			return
		}
	}
	b.down = false
	b.downFlag.Store(false)
	b.log.Info("redis backplane restored")
	b.emitLocked(backplane.Event{Kind: backplane.EventRestored})
}

// isCluster reports whether c is a Redis Cluster client.
func isCluster(c redis.UniversalClient) bool {
	_, ok := c.(*redis.ClusterClient)
	return ok
}
