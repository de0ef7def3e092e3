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
//
// Node liveness: each hub has a sorted set of nodes ("alive") scored with
// the time (Redis server time, ms, so node clocks do not matter) their
// heartbeat lapses. Reads leave out connections of nodes whose heartbeat
// lapsed; Sweep removes them in bounded batches, one atomic script per
// batch (safe on several nodes at once). A swept connection's group set
// is kept for SweptGroupsGrace, so a node that was only cut off (its
// heartbeat lapsed while it held the connection) gets the groups back
// when it adds the connection again.
type Store struct {
	client redis.UniversalClient
	prefix string
	now    func() time.Time
}

// SweptGroupsGrace is how long a swept connection's groups are kept for
// its node to add it again (after an outage longer than the heartbeat
// TTL); AddConnection of the same id restores them.
const SweptGroupsGrace = time.Hour

// luaNow is the Redis server's time in ms, in a script.
const luaNow = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// luaLive defines live(node): whether node's heartbeat (in KEYS alive at
// index ai) has not lapsed, memoised per script run.
const luaLive = `local liveMemo = {}
local function live(ai, node)
  local l = liveMemo[node]
  if l == nil then
    local sc = redis.call('ZSCORE', KEYS[ai], node)
    l = sc ~= false and tonumber(sc) > now
    liveMemo[node] = l
  end
  return l
end
local function nodeOf(v) local i = string.find(v, '\0', 1, true) return string.sub(v, 1, i - 1), string.sub(v, i + 1) end

`

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

// AddConnection records conn of user on node. A node unknown to the hub
// is entered with a lapsed heartbeat, so its connections are listed once
// it heartbeats and swept if it never does. Groups a sweep kept for conn
// (SweptGroupsGrace) are restored.
func (s *Store) AddConnection(ctx context.Context, hub, conn, user, node string) error {
	keys := []string{s.key(hub, "conns", ""), s.key(hub, "alive", ""), s.key(hub, "n", node), s.key(hub, "cg", conn), s.key(hub, "u", user), s.key(hub, "users", "")}
	return addConn.Run(ctx, s.client, keys, conn, connValue(node, user), node, user, s.key(hub, "g", "")+":").Err()
}

var addConn = redis.NewScript(`redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[4] ~= '' then redis.call('SADD', KEYS[5], ARGV[1]) redis.call('SADD', KEYS[6], ARGV[4]) end
if redis.call('PERSIST', KEYS[4]) == 1 then
  for _, g in ipairs(redis.call('SMEMBERS', KEYS[4])) do redis.call('SADD', ARGV[5] .. g, ARGV[1]) end
end
return 0`)

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
		return s.client.Del(ctx, s.key(hub, "cg", conn)).Err() // groups a sweep kept
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

// Connection returns conn's user and node; ok is false when conn is not
// recorded or its node's heartbeat lapsed.
func (s *Store) Connection(ctx context.Context, hub, conn string) (string, string, bool, error) {
	v, err := getConn.Run(ctx, s.client, []string{s.key(hub, "conns", ""), s.key(hub, "alive", "")}, conn).Text()
	if errors.Is(err, redis.Nil) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, err
	}
	node, user := splitConnValue(v)
	return user, node, true, nil
}

var getConn = redis.NewScript(luaNow + luaLive + `local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
if not live(2, nodeOf(v)) then return false end
return v`)

// members returns the live recorded members of the set KEYS[1] as id,
// node pairs; with ARGV[1] (the prefix of connections' group keys) set,
// members neither recorded nor kept by a sweep are dropped from the set.
var members = redis.NewScript(luaNow + luaLive + `local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HGET', KEYS[2], id)
  if v then
    local node = nodeOf(v)
    if live(3, node) then out[#out + 1] = id out[#out + 1] = node end
  elseif ARGV[1] ~= '' and redis.call('EXISTS', ARGV[1] .. id) == 0 then
    redis.call('SREM', KEYS[1], id)
  end
end
return out`)

func (s *Store) members(ctx context.Context, hub, set, cgPrefix string) (map[string]string, error) {
	vals, err := members.Run(ctx, s.client, []string{set, s.key(hub, "conns", ""), s.key(hub, "alive", "")}, cgPrefix).StringSlice()
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		out[vals[i]] = vals[i+1]
	}
	return out, nil
}

// UserConnections returns user's connections with their nodes (live
// nodes only).
func (s *Store) UserConnections(ctx context.Context, hub, user string) (map[string]string, error) {
	return s.members(ctx, hub, s.key(hub, "u", user), "")
}

var addToGroup = redis.NewScript(luaNow + luaLive + `local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or not live(4, nodeOf(v)) then return 0 end
redis.call('SADD', KEYS[2], ARGV[1]) redis.call('SADD', KEYS[3], ARGV[2]) return 1`)

// AddToGroup records conn, which must be recorded on a live node, in group.
func (s *Store) AddToGroup(ctx context.Context, hub, group, conn string) (bool, error) {
	n, err := addToGroup.Run(ctx, s.client, []string{s.key(hub, "conns", ""), s.key(hub, "g", group), s.key(hub, "cg", conn), s.key(hub, "alive", "")}, conn, group).Int()
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

// ConnectionGroups returns conn's groups (none when conn is not recorded
// on a live node).
func (s *Store) ConnectionGroups(ctx context.Context, hub, conn string) ([]string, error) {
	return connGroups.Run(ctx, s.client, []string{s.key(hub, "conns", ""), s.key(hub, "alive", ""), s.key(hub, "cg", conn)}, conn).StringSlice()
}

var connGroups = redis.NewScript(luaNow + luaLive + `local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or not live(2, nodeOf(v)) then return {} end
return redis.call('SMEMBERS', KEYS[3])`)

// GroupConnections returns group's members with their nodes (live nodes
// only).
func (s *Store) GroupConnections(ctx context.Context, hub, group string) (map[string]string, error) {
	return s.members(ctx, hub, s.key(hub, "g", group), s.key(hub, "cg", "")+":")
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

// Counts returns hub's connections and distinct users, on live nodes.
func (s *Store) Counts(ctx context.Context, hub string) (int64, int64, error) {
	keys := []string{s.key(hub, "conns", ""), s.key(hub, "alive", ""), s.key(hub, "users", "")}
	v, err := counts.Run(ctx, s.client, keys, s.key(hub, "n", "")+":", s.key(hub, "u", "")+":").Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	if len(v) != 2 {
		return 0, 0, errors.New("redis store: counts: unexpected reply")
	}
	return v[0], v[1], nil
}

// counts: everything recorded, less what is on nodes whose heartbeat
// lapsed (there are none, or few until the sweep, in the common case).
var counts = redis.NewScript(luaNow + luaLive + `local conns = redis.call('HLEN', KEYS[1])
local users = redis.call('SCARD', KEYS[3])
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
local seen = {}
for _, node in ipairs(dead) do
  for _, id in ipairs(redis.call('SMEMBERS', ARGV[1] .. node)) do
    local v = redis.call('HGET', KEYS[1], id)
    if v then
      local n, u = nodeOf(v)
      if n == node then
        conns = conns - 1
        if u ~= '' and not seen[u] then
          seen[u] = true
          local any = false
          for _, other in ipairs(redis.call('SMEMBERS', ARGV[2] .. u)) do
            local ov = redis.call('HGET', KEYS[1], other)
            if ov and live(2, nodeOf(ov)) then any = true break end
          end
          if not any then users = users - 1 end
        end
      end
    end
  end
end
return {conns, users}`)

// Heartbeat marks node live on hub for ttl (Redis server time) and reports
// whether it was live before (false: first heartbeat, or it lapsed and a
// sweep may have removed its connections).
func (s *Store) Heartbeat(ctx context.Context, hub, node string, ttl time.Duration) (bool, error) {
	n, err := heartbeat.Run(ctx, s.client, []string{s.key(hub, "alive", "")}, node, max(ttl.Milliseconds(), 1)).Int()
	return n == 1, err
}

var heartbeat = redis.NewScript(luaNow + `local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if old ~= false and tonumber(old) > now then return 1 end
return 0`)

// Sweep removes up to limit connections of hub recorded on nodes whose
// heartbeat lapsed, and forgets such a node once it has none. Each batch
// is one script that checks the node is still lapsed, so sweeps on
// several nodes at once, and a node heartbeating again meanwhile, are
// safe. It returns how many connections it removed.
func (s *Store) Sweep(ctx context.Context, hub string, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	alive := s.key(hub, "alive", "")
	dead, err := lapsed.Run(ctx, s.client, []string{alive}, limit).StringSlice()
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, node := range dead {
		if removed >= limit {
			break
		}
		keys := []string{s.key(hub, "conns", ""), alive, s.key(hub, "n", node), s.key(hub, "users", "")}
		n, err := sweepNode.Run(ctx, s.client, keys, node, limit-removed, s.key(hub, "u", "")+":", s.key(hub, "cg", "")+":", s.key(hub, "g", "")+":", SweptGroupsGrace.Milliseconds()).Int()
		if err != nil {
			return removed, err
		}
		removed += max(n, 0)
	}
	return removed, nil
}

var lapsed = redis.NewScript(luaNow + `return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))`)

// sweepNode removes up to ARGV[2] connections of the lapsed node ARGV[1]:
// their records, user entries and group memberships; the connection's
// own group set is kept for ARGV[6] ms (AddConnection restores it).
var sweepNode = redis.NewScript(luaNow + `local sc = redis.call('ZSCORE', KEYS[2], ARGV[1])
if sc ~= false and tonumber(sc) > now then return -1 end
local removed = 0
for _, id in ipairs(redis.call('SRANDMEMBER', KEYS[3], tonumber(ARGV[2]))) do
  redis.call('SREM', KEYS[3], id)
  local v = redis.call('HGET', KEYS[1], id)
  if v then
    local i = string.find(v, '\0', 1, true)
    local node, user = string.sub(v, 1, i - 1), string.sub(v, i + 1)
    if node == ARGV[1] then
      redis.call('HDEL', KEYS[1], id)
      removed = removed + 1
      if user ~= '' then
        redis.call('SREM', ARGV[3] .. user, id)
        if redis.call('SCARD', ARGV[3] .. user) == 0 then redis.call('SREM', KEYS[4], user) end
      end
      local cg = ARGV[4] .. id
      for _, g in ipairs(redis.call('SMEMBERS', cg)) do redis.call('SREM', ARGV[5] .. g, id) end
      redis.call('PEXPIRE', cg, tonumber(ARGV[6]))
    end
  end
end
if redis.call('SCARD', KEYS[3]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return removed`)

// NodeConnections returns the connections of hub recorded on node.
func (s *Store) NodeConnections(ctx context.Context, hub, node string) ([]string, error) {
	return s.client.SMembers(ctx, s.key(hub, "n", node)).Result()
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
