package testkit_test

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/hubfabric/hubfabric/testkit"
)

// rapidTB adapts *rapid.T (it has no Helper) to testkit.TB.
type rapidTB struct{ *rapid.T }

func (rapidTB) Helper() {}

// TestExplore generates random clusters, operation and fault sequences and
// seeds, and checks every invariant after each. The test command explores
// 100 cases (rapid's default); a long exploration:
//
//	go test ./testkit -run TestExplore -rapid.checks=20000 -timeout 1h
//
// A failure prints the seed, the generated steps (rapid shrinks them) and
// the trace; rapid prints how to replay the case.
func TestExplore(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		explore(rapidTB{rt}, rt)
	})
}

func explore(t testkit.TB, rt *rapid.T) {
	nodes := rapid.IntRange(1, 3).Draw(rt, "nodes")
	seed := rapid.Uint64Range(1, 1<<40).Draw(rt, "seed")
	c := testkit.NewCluster(t, testkit.Nodes(nodes), testkit.Seed(seed))
	nClients := rapid.IntRange(1, 4).Draw(rt, "clients")
	users := []string{"u1", "u2"}
	groups := []string{"g1", "g2"}
	var cls []*testkit.Client
	for i := 0; i < nClients; i++ {
		n := rapid.IntRange(0, nodes-1).Draw(rt, "node")
		u := rapid.SampledFrom(users).Draw(rt, "user")
		cls = append(cls, c.Client(fmt.Sprintf("c%d", i), u, c.Node(n)))
	}
	pick := func() *testkit.Client { return cls[rapid.IntRange(0, len(cls)-1).Draw(rt, "client")] }
	node := func() *testkit.Node { return c.Node(rapid.IntRange(0, nodes-1).Draw(rt, "n")) }
	group := func() string { return rapid.SampledFrom(groups).Draw(rt, "group") }
	steps := rapid.IntRange(1, 40).Draw(rt, "steps")
	for i := 0; i < steps; i++ {
		op := rapid.IntRange(0, 19).Draw(rt, "op")
		switch op {
		case 0, 1:
			pick().SendAll()
		case 2:
			pick().SendOthers()
		case 3, 4:
			pick().SendGroup(group())
		case 5:
			pick().SendOthersInGroup(group())
		case 6:
			pick().SendUser(rapid.SampledFrom(users).Draw(rt, "user"))
		case 7:
			pick().SendTo(pick())
		case 8:
			pick().Join(group())
		case 9:
			pick().Leave(group())
		case 10:
			pick().AddToGroup(pick(), group())
		case 11:
			pick().RemoveFromGroup(pick(), group())
		case 12:
			c.Settle()
		case 13:
			c.Delay(time.Duration(rapid.IntRange(0, 3).Draw(rt, "delay")) * 5 * time.Millisecond)
		case 14:
			n := node()
			n.Partition(true)
			c.Advance(time.Duration(rapid.IntRange(0, 50).Draw(rt, "ms")) * time.Millisecond)
			n.Partition(false)
		case 15:
			c.Outage(true)
			c.Advance(time.Duration(rapid.IntRange(0, 50).Draw(rt, "ms")) * time.Millisecond)
			c.Outage(false)
		case 16:
			n := node()
			n.Kill()
			n.Restart()
		case 17:
			cl := pick()
			cl.Drop()
		case 18:
			cl := pick()
			if !cl.Connected() {
				if err := cl.Connect(node()); err != nil {
					t.Fatalf("reconnect: %v", err)
				}
			}
		case 19:
			c.Advance(time.Duration(rapid.IntRange(1, 20).Draw(rt, "ms")) * time.Millisecond)
		}
	}
	c.Check()
}
