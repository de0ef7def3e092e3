package testkit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/testkit"
)

func TestRemoteGroupAckTimeoutIsVirtual(t *testing.T) {
	start := time.Now()
	c := testkit.NewCluster(t, testkit.Nodes(2))
	a := c.Client("a", "", c.Node(0))
	b := c.Client("b", "", c.Node(1))
	// b's connection on n2, added from n1: a remote command and its ack.
	if err := a.AddToGroup(b, "g").Wait().Err(); err != nil {
		t.Fatal(err)
	}
	a.SendGroup("g").Wait()
	// A connection that exists nowhere: the ack times out after 10 s.
	call := a.Invoke("Add", "nobody", "g").Wait()
	if call.Err() == nil || !strings.Contains(call.Error, "") {
		t.Fatalf("want an ack timeout, got %+v", call)
	}
	if c.Now() < 10*time.Second {
		t.Errorf("virtual time %s, want >= 10s", c.Now())
	}
	if real := time.Since(start); real > 5*time.Second {
		t.Errorf("a 10 s virtual timeout took %s of real time", real)
	}
	t.Logf("ack timeout error: %s (virtual %s, real %s)", call.Error, c.Now(), time.Since(start))
	c.Check()
}

func TestPartitionIsLoud(t *testing.T) {
	c := testkit.NewCluster(t, testkit.Nodes(2), testkit.Seed(3))
	a := c.Client("a", "", c.Node(0))
	b := c.Client("b", "", c.Node(1))
	c.Settle()
	c.Node(1).Partition(true)
	c.Settle()
	call := b.SendAll().Wait()
	if call.Err() == nil {
		t.Errorf("send from a partitioned node succeeded")
	}
	a.SendAll().Wait()
	c.Node(1).Partition(false)
	c.Settle()
	a.SendAll()
	b.SendAll()
	c.Check()
	if got := c.Node(1).Hub().Stats().Gaps; got == 0 {
		t.Errorf("no gap counted after the partition healed")
	}
}

func TestOutageKillRestartDropSlow(t *testing.T) {
	c := testkit.NewCluster(t, testkit.Nodes(3), testkit.Seed(5), testkit.Configure(func(cfg *hub.Config) { cfg.MaxOutboundBytes = 400 }))
	a := c.Client("a", "u1", c.Node(0))
	b := c.Client("b", "u2", c.Node(1))
	s := c.Client("s", "u3", c.Node(2))
	for _, cl := range []*testkit.Client{a, b, s} {
		cl.Join("room")
	}
	c.Settle()
	s.Slow(50 * time.Millisecond)
	for i := 0; i < 20; i++ {
		a.SendGroup("room")
	}
	c.Settle()
	if s.Connected() {
		t.Errorf("slow client not closed")
	}
	c.Outage(true)
	a.SendAll().Wait()
	c.Outage(false)
	c.Settle()
	c.Node(1).Kill()
	a.SendAll().Wait()
	c.Node(1).Restart()
	if err := b.Connect(c.Node(1)); err != nil {
		t.Fatal(err)
	}
	b.Join("room").Wait()
	a.Drop()
	if err := a.Connect(c.Node(2)); err != nil {
		t.Fatal(err)
	}
	a.SendGroup("room")
	b.SendAll()
	c.Check()
}

func TestDelayKeepsInvariants(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		c := testkit.NewCluster(t, testkit.Nodes(3), testkit.Seed(seed))
		c.Delay(5 * time.Millisecond)
		a := c.Client("a", "u", c.Node(0))
		b := c.Client("b", "u", c.Node(1))
		d := c.Client("d", "v", c.Node(2))
		b.Join("g")
		d.Join("g")
		c.Settle()
		for i := 0; i < 5; i++ {
			a.SendGroup("g")
			a.SendUser("u")
			b.SendAll()
			d.SendTo(a)
		}
		b.Leave("g").Wait()
		a.SendGroup("g")
		if v := c.Check(); len(v) > 0 {
			return
		}
	}
}
