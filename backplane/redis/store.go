package redisbp

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store keeps service mode's cluster-wide registry (package service's
// Store: connections and their nodes and users, group members, user-group
// memberships with a time to live) in the Redis of a Backplane, under its
// channel prefix, so apps sharing one Redis stay apart. All keys of one
// hub share a hash tag ("{<prefix>svc:<hub>}"), so on Redis Cluster they
// live on one slot and the multi-key steps (MULTI/EXEC, one script) are
// atomic there too. Safe for concurrent use; it uses the Backplane's
// client and closes nothing.
type Store struct {
	client redis.UniversalClient
	prefix string
	now    func() time.Time
}

// NewStore returns the Store on b's Redis.
func NewStore(b *Backplane) *Store {
	return &Store{client: b.client, prefix: b.opts.ChannelPrefix, now: time.Now}
}

func (s *Store) key(hub, kind, name string) string {
	k := "{" + s.prefix + "svc:" + hub + "}:" + kind
	if name != "" {
		k += ":" + name
	}
	return k
}

func connValue(node, user string) string { return node + "\x00" + user }

func splitConnValue(v string) (node, user string) {
	node, user, _ = strings.Cut(v, "\x00")
	return node, user
}

// AddConnection records conn of user on node.
func (s *Store) AddConnection(ctx context.Context, hub, conn, user, node string) error {
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.key(hub, "conns", ""), conn, connValue(node, user))
		p.SAdd(ctx, s.key(hub, "n", node), conn)
		if user != "" {
			p.SAdd(ctx, s.key(hub, "u", user), conn)
			p.SAdd(ctx, s.key(hub, "users", ""), user)
		}
		return nil
	})
	return err
}

// dropUser removes user from the user set when it has no connection left
// (atomic against a concurrent AddConnection of the same user).
var dropUser = redis.NewScript(`if redis.call('SCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end return 0`)

// RemoveConnection forgets conn and takes it out of its groups. The
// connection's record goes first, so an AddToGroup racing with it either
// fails or is undone here.
func (s *Store) RemoveConnection(ctx context.Context, hub, conn string) error {
	conns := s.key(hub, "conns", "")
	v, err := s.client.HGet(ctx, conns, conn).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.client.HDel(ctx, conns, conn).Err(); err != nil {
		return err
	}
	node, user := splitConnValue(v)
	groups, err := s.client.SMembers(ctx, s.key(hub, "cg", conn)).Result()
	if err != nil {
		return err
	}
	_, err = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, g := range groups {
			p.SRem(ctx, s.key(hub, "g", g), conn)
		}
		p.Del(ctx, s.key(hub, "cg", conn))
		p.SRem(ctx, s.key(hub, "n", node), conn)
		if user != "" {
			p.SRem(ctx, s.key(hub, "u", user), conn)
		}
		return nil
	})
	if err != nil || user == "" {
		return err
	}
	return dropUser.Run(ctx, s.client, []string{s.key(hub, "u", user), s.key(hub, "users", "")}, user).Err()
}

// Connection returns conn's user and node.
func (s *Store) Connection(ctx context.Context, hub, conn string) (string, string, bool, error) {
	v, err := s.client.HGet(ctx, s.key(hub, "conns", ""), conn).Result()
	if errors.Is(err, redis.Nil) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, err
	}
	node, user := splitConnValue(v)
	return user, node, true, nil
}

// nodesOf returns the recorded nodes of ids (unrecorded ones are left out).
func (s *Store) nodesOf(ctx context.Context, hub string, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	vals, err := s.client.HMGet(ctx, s.key(hub, "conns", ""), ids...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			node, _ := splitConnValue(str)
			out[ids[i]] = node
		}
	}
	return out, nil
}

// UserConnections returns user's connections with their nodes.
func (s *Store) UserConnections(ctx context.Context, hub, user string) (map[string]string, error) {
	ids, err := s.client.SMembers(ctx, s.key(hub, "u", user)).Result()
	if err != nil {
		return nil, err
	}
	return s.nodesOf(ctx, hub, ids)
}

var addToGroup = redis.NewScript(`if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1]) redis.call('SADD', KEYS[3], ARGV[2]) return 1`)

// AddToGroup records conn, which must be recorded, in group.
func (s *Store) AddToGroup(ctx context.Context, hub, group, conn string) (bool, error) {
	n, err := addToGroup.Run(ctx, s.client, []string{s.key(hub, "conns", ""), s.key(hub, "g", group), s.key(hub, "cg", conn)}, conn, group).Int()
	return n == 1, err
}

// RemoveFromGroup takes conn out of group.
func (s *Store) RemoveFromGroup(ctx context.Context, hub, group, conn string) (bool, error) {
	var rem *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		rem = p.SRem(ctx, s.key(hub, "g", group), conn)
		p.SRem(ctx, s.key(hub, "cg", conn), group)
		return nil
	})
	if err != nil {
		return false, err
	}
	return rem.Val() == 1, nil
}

// ConnectionGroups returns conn's groups.
func (s *Store) ConnectionGroups(ctx context.Context, hub, conn string) ([]string, error) {
	return s.client.SMembers(ctx, s.key(hub, "cg", conn)).Result()
}

// GroupConnections returns group's members with their nodes.
func (s *Store) GroupConnections(ctx context.Context, hub, group string) (map[string]string, error) {
	ids, err := s.client.SMembers(ctx, s.key(hub, "g", group)).Result()
	if err != nil {
		return nil, err
	}
	return s.nodesOf(ctx, hub, ids)
}

// AddUserToGroup records user in group until now+ttl (0: for good).
func (s *Store) AddUserToGroup(ctx context.Context, hub, user, group string, ttl time.Duration) error {
	score := math.Inf(1)
	if ttl > 0 {
		score = float64(s.now().Add(ttl).UnixMilli())
	}
	return s.client.ZAdd(ctx, s.key(hub, "ug", user), redis.Z{Score: score, Member: group}).Err()
}

// RemoveUserFromGroup forgets user's membership of group; ok is false when
// there was none (or it had expired).
func (s *Store) RemoveUserFromGroup(ctx context.Context, hub, user, group string) (bool, error) {
	k := s.key(hub, "ug", user)
	var score *redis.FloatCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		score = p.ZScore(ctx, k, group)
		p.ZRem(ctx, k, group)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return score.Val() > float64(s.now().UnixMilli()), nil
}

// UserGroups returns user's groups that have not expired, with their
// expiry (zero: never); expired ones are dropped on the way.
func (s *Store) UserGroups(ctx context.Context, hub, user string) (map[string]time.Time, error) {
	k := s.key(hub, "ug", user)
	now := strconv.FormatInt(s.now().UnixMilli(), 10)
	var groups *redis.ZSliceCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, k, "-inf", now)
		groups = p.ZRangeByScoreWithScores(ctx, k, &redis.ZRangeBy{Min: "(" + now, Max: "+inf"})
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Time, len(groups.Val()))
	for _, z := range groups.Val() {
		var until time.Time
		if !math.IsInf(z.Score, 1) {
			until = time.UnixMilli(int64(z.Score))
		}
		out[z.Member.(string)] = until
	}
	return out, nil
}

// Counts returns hub's connections and distinct users.
func (s *Store) Counts(ctx context.Context, hub string) (int64, int64, error) {
	var c, u *redis.IntCmd
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		c = p.HLen(ctx, s.key(hub, "conns", ""))
		u = p.SCard(ctx, s.key(hub, "users", ""))
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return c.Val(), u.Val(), nil
}

// Forget removes every connection of hub recorded on node.
func (s *Store) Forget(ctx context.Context, hub, node string) error {
	ids, err := s.client.SMembers(ctx, s.key(hub, "n", node)).Result()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := s.RemoveConnection(ctx, hub, id); err != nil {
			return err
		}
	}
	return s.client.Del(ctx, s.key(hub, "n", node)).Err()
}
