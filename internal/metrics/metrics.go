// Package metrics holds the counters a node's hot paths touch when the node
// exports metrics: plain atomics and pre-resolved observers, read by the
// Prometheus collector of package hub at scrape time. Every pointer of this
// package may be nil, meaning "no metrics": the code that counts checks for
// nil and does nothing else, so a node without metrics pays one branch.
package metrics

import (
	"sync"
	"sync/atomic"
)

// Observer takes one sample of a distribution; a prometheus.Observer
// (a histogram child) satisfies it. Safe for concurrent use.
type Observer interface{ Observe(float64) }

// Conn counts what the connections of one hub do. The transport and the
// connection code update it with atomics; the collector reads it. Safe for
// concurrent use.
type Conn struct {
	// Connections is the number of open WebSocket connections.
	Connections atomic.Int64
	// LongPolling and ServerSentEvents are the open connections of those
	// transports.
	LongPolling      atomic.Int64
	ServerSentEvents atomic.Int64
	// Received counts hub messages (records, Pings included) parsed from
	// clients.
	Received atomic.Uint64
	// Sent counts records written to clients' sockets (the handshake answer
	// and Close messages included).
	Sent atomic.Uint64
	// SlowCloses counts connections closed because their outbound queue
	// overflowed.
	SlowCloses atomic.Uint64
	// QueuedBytes and QueuedRecords are what all connections' outbound
	// queues hold now (gauges): where a backlog waiting for slow sockets,
	// or for a busy node to write it, sits.
	QueuedBytes   atomic.Int64
	QueuedRecords atomic.Int64
	// QueueBytes observes the bytes waiting in a connection's outbound
	// queue each time its writer takes a frame, and when an enqueue
	// overflows it. Nil for none.
	QueueBytes Observer
}

// Depth is what a mailbox tells about itself (protoactor's Mailbox does).
type Depth interface{ UserMessageCount() int }

// Mailboxes tracks the mailboxes of the actors whose depth is exported, by
// kind ("hub", "group", "bridge"). Adding and removing happen when actors
// start and stop, never per message. Safe for concurrent use.
type Mailboxes struct {
	mu     sync.Mutex
	byKind map[string]map[*MailboxRef]struct{}
}

// MailboxRef is one tracked mailbox; Remove forgets it.
type MailboxRef struct {
	m    *Mailboxes
	kind string
	box  Depth
}

// NewMailboxes returns an empty Mailboxes.
func NewMailboxes() *Mailboxes {
	return &Mailboxes{byKind: map[string]map[*MailboxRef]struct{}{}}
}

// Ref returns a reference for a mailbox of kind that does not exist yet;
// Set tracks it once it does. On a nil Mailboxes it returns nil, whose
// methods do nothing.
func (m *Mailboxes) Ref(kind string) *MailboxRef {
	if m == nil {
		return nil
	}
	return &MailboxRef{m: m, kind: kind}
}

// Set starts tracking box under r.
func (r *MailboxRef) Set(box Depth) {
	if r == nil {
		return
	}
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	r.box = box
	set := r.m.byKind[r.kind]
	if set == nil {
		set = map[*MailboxRef]struct{}{}
		r.m.byKind[r.kind] = set
	}
	set[r] = struct{}{}
}

// Remove stops tracking r's mailbox. It is idempotent.
func (r *MailboxRef) Remove() {
	if r == nil {
		return
	}
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	delete(r.m.byKind[r.kind], r)
}

// MailboxStats is the state of one kind's mailboxes at one moment.
type MailboxStats struct {
	Kind     string
	Actors   int // mailboxes tracked
	Messages int // user messages queued in all of them
	Max      int // user messages queued in the deepest
}

// Snapshot returns the stats of every kind seen so far, for kinds, in that
// order (a kind without mailboxes reports zeros).
func (m *Mailboxes) Snapshot(kinds ...string) []MailboxStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]MailboxStats, 0, len(kinds))
	for _, k := range kinds {
		s := MailboxStats{Kind: k}
		for r := range m.byKind[k] {
			n := r.box.UserMessageCount()
			s.Actors++
			s.Messages += n
			s.Max = max(s.Max, n)
		}
		out = append(out, s)
	}
	return out
}
