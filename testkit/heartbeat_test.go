package testkit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/testkit"
)

// TestKeepAliveOnTheVirtualClock: an idle client gets the node's Pings
// every 15 virtual seconds and stays connected for hours of virtual time;
// a client that falls silent is closed after the 30 s client timeout. It
// all costs milliseconds of real time.
func TestKeepAliveOnTheVirtualClock(t *testing.T) {
	start := time.Now()
	c := testkit.NewCluster(t, testkit.Nodes(2), testkit.Seed(3))
	idle := c.Client("idle", "u1", c.Node(0))
	quiet := c.Client("quiet", "u2", c.Node(1))
	c.Settle() // background timers do not keep Settle going
	if c.Now() > time.Second {
		t.Fatalf("Settle ran the keep-alive timers: virtual time %s", c.Now())
	}
	quiet.Silence()
	c.Advance(2 * time.Hour)
	if !idle.Connected() {
		t.Fatalf("an idle client that pings was closed: %v", idle.Closes)
	}
	if n := idle.Pings(); n < 400 || n > 500 {
		t.Fatalf("idle client got %d Pings in 2 virtual hours, want about 480 (one per 15 s)", n)
	}
	if quiet.Connected() || len(quiet.Closes) != 1 || !strings.Contains(quiet.Closes[0], "sent nothing for 30s") {
		t.Fatalf("silent client: connected=%v closes=%q, want closed by the 30 s client timeout", quiet.Connected(), quiet.Closes)
	}
	c.Check()
	if real := time.Since(start); real > 30*time.Second {
		t.Fatalf("two virtual hours took %s of real time", real)
	}
}
