package testkit_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/testkit"
)

// handOverSeeds is how many seeds each hand-over scenario runs: each seed
// orders the mailbox runs and backplane deliveries of the move differently.
const handOverSeeds = 25

// handOverCluster is two nodes with stateful reconnect, a stateful client m
// (user um, in group g) on node 0, and plain clients a on node 0 and b on
// node 1 that send to m on every route.
func handOverCluster(t *testing.T, seed uint64) (c *testkit.Cluster, m, a, b *testkit.Client) {
	c = testkit.NewCluster(t, testkit.Nodes(2), testkit.Seed(seed), testkit.Configure(func(cfg *hub.Config) {
		cfg.StatefulReconnect = true
		cfg.StatefulReconnectWindow = 10 * time.Second
		cfg.GroupAckTimeout = 2 * time.Second
	}))
	m = c.StatefulClient("m", "um", c.Node(0))
	a = c.Client("a", "ua", c.Node(0))
	b = c.Client("b", "ub", c.Node(1))
	if err := m.Join("g").Wait().Err(); err != nil {
		t.Fatal(err)
	}
	c.Settle()
	return c, m, a, b
}

// sendEveryRoute has a and b each send once to m's connection, user and
// group, and to all.
func sendEveryRoute(m *testkit.Client, senders ...*testkit.Client) {
	for _, s := range senders {
		s.SendTo(m)
		s.SendUser("um")
		s.SendGroup("g")
		s.SendAll()
	}
}

func runSeeds(t *testing.T, scenario func(t *testing.T, seed uint64)) {
	for seed := uint64(1); seed <= handOverSeeds; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { scenario(t, seed) })
	}
}

// TestHandOverScenario: m's socket drops; messages for it are sent from both nodes while it
// is away, while it moves to node 1 and after. Every one arrives, once, in order per sender
// and route; m keeps its user and group, and node 1 serves its calls.
func TestHandOverScenario(t *testing.T) {
	runSeeds(t, func(t *testing.T, seed uint64) {
		c, m, a, b := handOverCluster(t, seed)
		sendEveryRoute(m, a, b)
		c.Settle()
		m.Drop()
		sendEveryRoute(m, a, b)
		if err := m.Resume(c.Node(1)); err != nil {
			t.Fatalf("resume on node 1: %v", err)
		}
		sendEveryRoute(m, a, b) // during the move
		c.Settle()
		if m.Node() != c.Node(1) || !m.Connected() {
			t.Fatalf("m is on %s, connected %v; want on n2", m.Node().Name(), m.Connected())
		}
		if err := m.SendGroup("g").Wait().Err(); err != nil {
			t.Fatalf("a call after the move: %v", err)
		}
		sendEveryRoute(m, a, b)
		c.Check()
	})
}

// TestHandOverDropInTheMiddle: the socket m reconnected with drops again while the
// connection moves; m resumes on node 1 (where the connection waits for it now) or back on
// node 0. Nothing is lost or doubled.
func TestHandOverDropInTheMiddle(t *testing.T) {
	runSeeds(t, func(t *testing.T, seed uint64) {
		c, m, a, b := handOverCluster(t, seed)
		m.Drop()
		sendEveryRoute(m, a, b)
		if err := m.Resume(c.Node(1)); err != nil {
			t.Fatalf("resume on node 1: %v", err)
		}
		sendEveryRoute(m, a, b)
		m.Drop() // in the middle of the hand-over
		sendEveryRoute(m, a, b)
		c.Settle()
		back := c.Node(int(seed % 2))
		if err := m.Resume(back); err != nil {
			t.Fatalf("resume on %s: %v", back.Name(), err)
		}
		sendEveryRoute(m, a, b)
		c.Settle()
		if !m.Connected() {
			t.Fatalf("m is not connected after the second resume: %v", m.Closes)
		}
		c.Check()
	})
}

// TestHandOverOldNodeDies: node 0 dies while m is away, or in the middle of the hand-over.
// Either the move is refused (nobody has the connection) or it fails with a Close to m; no
// message is lost without that being reported.
func TestHandOverOldNodeDies(t *testing.T) {
	runSeeds(t, func(t *testing.T, seed uint64) {
		c, m, _, b := handOverCluster(t, seed)
		m.Drop()
		sendEveryRoute(m, b)
		if seed%2 == 0 {
			c.Node(0).Kill()
			c.Settle()
			if err := m.Resume(c.Node(1)); err == nil {
				t.Fatal("resume on node 1 after the connection's node died: accepted")
			}
		} else {
			if err := m.Resume(c.Node(1)); err != nil {
				t.Fatalf("resume on node 1: %v", err)
			}
			c.Node(0).Kill() // in the middle of the hand-over
			sendEveryRoute(m, b)
			c.Settle()
			c.Advance(5 * time.Second) // past the move's step timeouts
			if m.Connected() {
				// The move may have finished before the node died.
				sendEveryRoute(m, b)
			}
		}
		c.Check()
	})
}

// TestHandOverDuringOutage: the backplane goes down while m is away (the move is refused
// and m resumes on its own node, with everything) or in the middle of the hand-over (the
// move fails loudly).
func TestHandOverDuringOutage(t *testing.T) {
	runSeeds(t, func(t *testing.T, seed uint64) {
		c, m, a, b := handOverCluster(t, seed)
		m.Drop()
		sendEveryRoute(m, a, b)
		c.Settle()
		if seed%2 == 0 {
			c.Outage(true)
			if err := m.Resume(c.Node(1)); err == nil {
				t.Fatal("resume on node 1 during an outage: accepted")
			}
			c.Outage(false)
			c.Settle()
			if err := m.Resume(c.Node(0)); err != nil {
				t.Fatalf("resume on node 0 after the outage: %v", err)
			}
		} else {
			if err := m.Resume(c.Node(1)); err != nil {
				t.Fatalf("resume on node 1: %v", err)
			}
			c.Outage(true) // in the middle of the hand-over
			sendEveryRoute(m, a, b)
			c.Advance(5 * time.Second)
			c.Outage(false)
		}
		c.Settle()
		sendEveryRoute(m, a, b)
		c.Check()
	})
}
