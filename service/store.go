package service

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Store is the cluster-wide view service mode needs and a node alone does
// not have: which connections a hub has and on which node, each
// connection's groups and user, and the user-group memberships added
// through the REST API (with their time to live). Every node of a cluster
// must use one shared Store (backplane/redis Store on the Redis the
// backplane uses); MemoryStore serves a single node.
//
// Names (hub, connection ids, users, groups) are opaque strings of any
// bytes. Methods are safe for concurrent use; each is one atomic step (a
// connection's removal takes it out of its groups in the same step), and
// blocking ones give up when ctx ends. An error means the step may not
// have happened; callers report it (503) and do not retry silently.
//
// Node liveness: a node calls Heartbeat for each hub every
// Config.HeartbeatInterval with Config.HeartbeatTTL, before it adds
// connections and for as long as it runs. Reads (Connection,
// UserConnections, ConnectionGroups, GroupConnections, Counts, and
// AddToGroup's check) leave out the connections of a node whose heartbeat
// lapsed, as if it had none; Sweep, run by every live node, removes them
// in bounded batches. A node whose Heartbeat reports it was not live (it
// was cut off for longer than the TTL) adds its connections again. Forget
// removes what an earlier run of a node id left, at once.
type Store interface {
	// AddConnection records conn of user (may be "") on node.
	AddConnection(ctx context.Context, hub, conn, user, node string) error
	// RemoveConnection forgets conn and takes it out of its groups.
	RemoveConnection(ctx context.Context, hub, conn string) error
	// Connection returns conn's user and node; ok is false when no node
	// has it.
	Connection(ctx context.Context, hub, conn string) (user, node string, ok bool, err error)
	// UserConnections returns the connections of user, by connection id,
	// with their nodes.
	UserConnections(ctx context.Context, hub, user string) (map[string]string, error)
	// AddToGroup records conn (which must be recorded: ok false otherwise)
	// as a member of group.
	AddToGroup(ctx context.Context, hub, group, conn string) (ok bool, err error)
	// RemoveFromGroup takes conn out of group; ok is false when it was not
	// a member.
	RemoveFromGroup(ctx context.Context, hub, group, conn string) (ok bool, err error)
	// ConnectionGroups returns conn's groups.
	ConnectionGroups(ctx context.Context, hub, conn string) ([]string, error)
	// GroupConnections returns the members of group with their nodes.
	GroupConnections(ctx context.Context, hub, group string) (map[string]string, error)
	// AddUserToGroup records that user is in group until now+ttl (ttl 0:
	// for good), replacing an earlier ttl.
	AddUserToGroup(ctx context.Context, hub, user, group string, ttl time.Duration) error
	// RemoveUserFromGroup forgets user's membership of group; ok is false
	// when there was none.
	RemoveUserFromGroup(ctx context.Context, hub, user, group string) (ok bool, err error)
	// UserGroups returns the groups user is in (not expired), each with
	// the time its membership expires (the zero time: never).
	UserGroups(ctx context.Context, hub, user string) (map[string]time.Time, error)
	// Counts returns the number of connections and of distinct users
	// (with at least one connection) of hub.
	Counts(ctx context.Context, hub string) (connections, users int64, err error)
	// Forget removes every connection of hub recorded on node.
	Forget(ctx context.Context, hub, node string) error
	// Heartbeat marks node live on hub for ttl from now; wasLive reports
	// whether it was live just before (false on the first heartbeat and
	// after a lapse, when a sweep may have removed its connections).
	Heartbeat(ctx context.Context, hub, node string, ttl time.Duration) (wasLive bool, err error)
	// Sweep removes up to limit connections of hub recorded on nodes whose
	// heartbeat lapsed (with their user entries and group memberships)
	// and forgets such a node once it has none; it returns how many it
	// removed. Safe to run on several nodes at once; a node that
	// heartbeats again is no longer swept.
	Sweep(ctx context.Context, hub string, limit int) (removed int, err error)
	// NodeConnections returns the connections of hub recorded on node,
	// whether or not node is live.
	NodeConnections(ctx context.Context, hub, node string) ([]string, error)
}

// MemoryStore is a Store in this process's memory: for a single node (the
// in-memory backplane). It keeps the whole contract, heartbeats included
// (on its own clock), although one process's nodes cannot die without it.
// It is safe for concurrent use; its zero value is not usable, use
// NewMemoryStore.
type MemoryStore struct {
	mu   sync.Mutex
	hubs map[string]*memHub
	now  func() time.Time
}

type memConn struct {
	user, node string
	groups     map[string]bool
}

type memHub struct {
	conns      map[string]*memConn
	groups     map[string]map[string]bool // group -> conns
	users      map[string]map[string]bool // user -> conns
	userGroups map[string]map[string]time.Time
	alive      map[string]time.Time // node -> heartbeat lapses (zero: lapsed)
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{hubs: map[string]*memHub{}, now: time.Now}
}

func (m *MemoryStore) hub(name string) *memHub {
	h := m.hubs[name]
	if h == nil {
		h = &memHub{conns: map[string]*memConn{}, groups: map[string]map[string]bool{}, users: map[string]map[string]bool{}, userGroups: map[string]map[string]time.Time{}, alive: map[string]time.Time{}}
		m.hubs[name] = h
	}
	return h
}

func addTo(set map[string]map[string]bool, key, member string) {
	s := set[key]
	if s == nil {
		s = map[string]bool{}
		set[key] = s
	}
	s[member] = true
}

func removeFrom(set map[string]map[string]bool, key, member string) bool {
	s := set[key]
	if !s[member] {
		return false
	}
	delete(s, member)
	if len(s) == 0 {
		delete(set, key)
	}
	return true
}

// AddConnection implements Store.
func (m *MemoryStore) AddConnection(_ context.Context, hub, conn, user, node string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	m.removeLocked(h, conn)
	if _, ok := h.alive[node]; !ok {
		h.alive[node] = time.Time{} // listed once it heartbeats
	}
	h.conns[conn] = &memConn{user: user, node: node, groups: map[string]bool{}}
	if user != "" {
		addTo(h.users, user, conn)
	}
	return nil
}

func (m *MemoryStore) removeLocked(h *memHub, conn string) {
	c := h.conns[conn]
	if c == nil {
		return
	}
	for g := range c.groups {
		removeFrom(h.groups, g, conn)
	}
	if c.user != "" {
		removeFrom(h.users, c.user, conn)
	}
	delete(h.conns, conn)
}

// RemoveConnection implements Store.
func (m *MemoryStore) RemoveConnection(_ context.Context, hub, conn string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removeLocked(m.hub(hub), conn)
	return nil
}

// Connection implements Store.
func (m *MemoryStore) Connection(_ context.Context, hub, conn string) (string, string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	c := h.conns[conn]
	if c == nil || !m.liveLocked(h, c.node) {
		return "", "", false, nil
	}
	return c.user, c.node, true, nil
}

func (m *MemoryStore) nodesOf(h *memHub, conns map[string]bool) map[string]string {
	out := make(map[string]string, len(conns))
	for id := range conns {
		if c := h.conns[id]; c != nil && m.liveLocked(h, c.node) {
			out[id] = c.node
		}
	}
	return out
}

// UserConnections implements Store.
func (m *MemoryStore) UserConnections(_ context.Context, hub, user string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	return m.nodesOf(h, h.users[user]), nil
}

// AddToGroup implements Store.
func (m *MemoryStore) AddToGroup(_ context.Context, hub, group, conn string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	c := h.conns[conn]
	if c == nil || !m.liveLocked(h, c.node) {
		return false, nil
	}
	c.groups[group] = true
	addTo(h.groups, group, conn)
	return true, nil
}

// RemoveFromGroup implements Store.
func (m *MemoryStore) RemoveFromGroup(_ context.Context, hub, group, conn string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	if c := h.conns[conn]; c != nil {
		delete(c.groups, group)
	}
	return removeFrom(h.groups, group, conn), nil
}

// ConnectionGroups implements Store.
func (m *MemoryStore) ConnectionGroups(_ context.Context, hub, conn string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	c := h.conns[conn]
	if c == nil || !m.liveLocked(h, c.node) {
		return nil, nil
	}
	return sortedSet(c.groups), nil
}

// GroupConnections implements Store.
func (m *MemoryStore) GroupConnections(_ context.Context, hub, group string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	return m.nodesOf(h, h.groups[group]), nil
}

// AddUserToGroup implements Store.
func (m *MemoryStore) AddUserToGroup(_ context.Context, hub, user, group string, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	g := h.userGroups[user]
	if g == nil {
		g = map[string]time.Time{}
		h.userGroups[user] = g
	}
	var until time.Time // zero: for good
	if ttl > 0 {
		until = m.now().Add(ttl)
	}
	g[group] = until
	return nil
}

// RemoveUserFromGroup implements Store.
func (m *MemoryStore) RemoveUserFromGroup(_ context.Context, hub, user, group string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	g := h.userGroups[user]
	until, ok := g[group]
	if !ok {
		return false, nil
	}
	delete(g, group)
	if len(g) == 0 {
		delete(h.userGroups, user)
	}
	return until.IsZero() || until.After(m.now()), nil
}

// UserGroups implements Store.
func (m *MemoryStore) UserGroups(_ context.Context, hub, user string) (map[string]time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := map[string]time.Time{}
	for g, until := range m.hub(hub).userGroups[user] {
		if until.IsZero() || until.After(now) {
			out[g] = until
		}
	}
	return out, nil
}

// Counts implements Store.
func (m *MemoryStore) Counts(_ context.Context, hub string) (int64, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	var conns int64
	users := map[string]bool{}
	for _, c := range h.conns {
		if m.liveLocked(h, c.node) {
			conns++
			if c.user != "" {
				users[c.user] = true
			}
		}
	}
	return conns, int64(len(users)), nil
}

func (m *MemoryStore) liveLocked(h *memHub, node string) bool {
	return h.alive[node].After(m.now())
}

// Heartbeat implements Store.
func (m *MemoryStore) Heartbeat(_ context.Context, hub, node string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	was := m.liveLocked(h, node)
	h.alive[node] = m.now().Add(ttl)
	return was, nil
}

// Sweep implements Store.
func (m *MemoryStore) Sweep(_ context.Context, hub string, limit int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	removed := 0
	for id, c := range h.conns {
		if removed >= limit {
			return removed, nil
		}
		if !m.liveLocked(h, c.node) {
			m.removeLocked(h, id)
			removed++
		}
	}
	for node := range h.alive {
		if !m.liveLocked(h, node) {
			delete(h.alive, node) // none of its connections is left
		}
	}
	return removed, nil
}

// NodeConnections implements Store.
func (m *MemoryStore) NodeConnections(_ context.Context, hub, node string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for id, c := range m.hub(hub).conns {
		if c.node == node {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Forget implements Store.
func (m *MemoryStore) Forget(_ context.Context, hub, node string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hub(hub)
	for id, c := range h.conns {
		if c.node == node {
			m.removeLocked(h, id)
		}
	}
	return nil
}

func sortedSet(s map[string]bool) []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
