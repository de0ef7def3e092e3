package redisbp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubfabric/hubfabric/backplane"
)

// Presence closes the window after a drop in which a publish reaches Redis
// while another backplane has not resubscribed yet: Redis would accept the
// message, the other backplane would never get it, and only it would count
// a gap. Every subscription connection also subscribes its partition's
// presence channel, a name shared by every backplane, in the same
// (S)SUBSCRIBE command as its channels: go-redis resubscribes a reconnected
// connection in one command, which Redis runs at once, so a connection
// counted on the presence channel is subscribed to all of its channels.
//
// Each health round counts the subscribers of every partition's presence
// channel ((SHARD)NUMSUB, on the partition's own node on a cluster) and
// keeps the count as the partition's expected audience. Every Publish
// counts again, in the same pipeline and before its messages, and fails
// with ErrUnavailable if a partition has fewer subscribers than expected:
// Redis runs a pipeline's commands in order, so a message published after a
// full count reaches every backplane that was counted.
//
// The expected count goes up at once. It goes down when a backplane leaves
// for good (its node stopped): at the next round, if the Redis server's
// run_id is unchanged and this backplane is up; after a Redis restart (a
// new run_id, or this backplane down) it is held until the count is back,
// or for Options.ProbeTimeout at most, after which a backplane still
// missing is taken as gone (if it comes back later, it reports its own gap,
// as the contract says).
//
// Classic pub/sub on a Redis Cluster (Sharded: ShardedOff) is not counted:
// there NUMSUB counts one cluster node's subscribers only.

// presenceName is the Redis name of partition p's presence channel.
func (b *Backplane) presenceName(sharded bool, p int) string {
	return b.prefix(sharded, p) + "__hubfabric_presence:" + strconv.Itoa(p)
}

// counted reports whether presence is counted in mode.
func (b *Backplane) counted(mode int) bool {
	return !(b.cluster && mode == modeClassic)
}

// queueCount adds to pipe the command counting the subscribers of
// partition p's presence channel, routed to the partition's node.
func (b *Backplane) queueCount(ctx context.Context, pipe redis.Pipeliner, mode, p int) *redis.MapStringIntCmd {
	name := b.presenceName(mode == modeSharded, p)
	if mode == modeSharded {
		cmd := pipe.PubSubShardNumSub(ctx, name)
		cmd.SetFirstKeyPos(2) // route by the channel's slot, with the messages of p
		return cmd
	}
	return pipe.PubSubNumSub(ctx, name)
}

func countOf(cmd *redis.MapStringIntCmd) int64 {
	for _, n := range cmd.Val() {
		return n
	}
	return 0
}

// errAudience is why a publish failed while a backplane that was
// subscribed has not resubscribed.
var errAudience = errors.New("a node subscribed before a drop has not resubscribed yet")

// checkAudience compares the counts queued before a publish with the
// expected ones. A partition short of subscribers is looked at at once: if
// its server is the one of the last round (no restart) and this backplane
// is up and not holding, a backplane left, the messages reached every one
// still there, and the lower count is expected from now on. Otherwise it
// returns an error wrapping backplane.ErrUnavailable.
func (b *Backplane) checkAudience(ctx context.Context, mode int, counts map[int]*redis.MapStringIntCmd) error {
	short := make(map[int]int64)
	b.mu.Lock()
	for p, cmd := range counts {
		if n := countOf(cmd); n < b.expected[p] {
			short[p] = n
		}
	}
	b.mu.Unlock()
	if len(short) == 0 {
		return nil
	}
	ids, err := b.serverIDs(ctx, mode)
	b.mu.Lock()
	defer b.mu.Unlock()
	down := b.downFlag.Load()
	for p, n := range short {
		switch {
		case err != nil:
		case ids[p] == b.serverID[p] && !down && b.holding[p].IsZero():
			b.expected[p] = min(b.expected[p], n) // a backplane left
			continue
		case ids[p] != b.serverID[p]:
			b.serverID[p] = ids[p]
			if b.holding[p].IsZero() {
				b.holding[p] = time.Now()
			}
		}
		return fmt.Errorf("redis backplane: publish: %w: %w (partition %d: %d of %d)", backplane.ErrUnavailable, errAudience, p, n, b.expected[p])
	}
	return nil
}

// partitionsOf returns the partitions msgs go to.
func (b *Backplane) partitionsOf(mode int, msgs []backplane.Message) []int {
	if mode != modeSharded {
		return []int{0}
	}
	var ps []int
	seen := make(map[int]bool, 4)
	for _, m := range msgs {
		if p := b.partition(m.Channel); !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	return ps
}

// serverIDs returns the run_id of the Redis server of every partition
// (one server unless on a cluster).
func (b *Backplane) serverIDs(ctx context.Context, mode int) (map[int]string, error) {
	ids := make(map[int]string)
	cc, ok := b.client.(*redis.ClusterClient)
	if !ok {
		id, err := runID(ctx, b.client)
		if err != nil {
			return nil, err
		}
		for p := range b.opts.Partitions {
			ids[p] = id
		}
		return ids, nil
	}
	byAddr := make(map[string]string)
	for p := range b.opts.Partitions {
		c, err := cc.MasterForKey(ctx, b.presenceName(mode == modeSharded, p))
		if err != nil {
			return nil, err
		}
		addr := c.Options().Addr
		id, ok := byAddr[addr]
		if !ok {
			if id, err = runID(ctx, c); err != nil {
				return nil, err
			}
			byAddr[addr] = id
		}
		ids[p] = id
	}
	return ids, nil
}

func runID(ctx context.Context, c redis.Cmdable) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v, nil
		}
	}
	return "", errors.New("INFO server has no run_id")
}

// measureAudience counts every partition's presence subscribers and
// updates the expected counts (see the comment at the top of this file).
func (b *Backplane) measureAudience(ctx context.Context, mode int, now time.Time) error {
	if !b.counted(mode) {
		return nil
	}
	ids, err := b.serverIDs(ctx, mode)
	if err != nil {
		return err
	}
	parts := 1
	if mode == modeSharded {
		parts = b.opts.Partitions
	}
	pipe := b.client.Pipeline()
	cmds := make([]*redis.MapStringIntCmd, parts)
	for p := range parts {
		cmds[p] = b.queueCount(ctx, pipe, mode, p)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	down := b.downFlag.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	for p, cmd := range cmds {
		n, want := countOf(cmd), b.expected[p]
		restarted := b.serverID[p] != "" && b.serverID[p] != ids[p]
		b.serverID[p] = ids[p]
		switch {
		case n >= want:
			b.expected[p] = n
			delete(b.holding, p)
		case !restarted && !down && b.holding[p].IsZero():
			b.expected[p] = n // a backplane left
		default:
			since, ok := b.holding[p]
			if !ok {
				b.holding[p] = now
				b.log.Info("waiting for nodes to resubscribe; publishes fail until they have",
					"partition", p, "subscribed", n, "expected", want)
			} else if now.Sub(since) > b.opts.ProbeTimeout {
				b.log.Warn("nodes did not resubscribe within the probe timeout; taken as gone",
					"partition", p, "subscribed", n, "expected", want)
				b.expected[p] = n
				delete(b.holding, p)
			}
		}
	}
	return nil
}
