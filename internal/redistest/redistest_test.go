package redistest_test

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/hubfabric/hubfabric/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStandaloneStopRestart(t *testing.T) {
	t.Parallel()
	s := redistest.StartStandalone(t)
	if got, err := redistest.Do(s.Addr, "PING"); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	s.Stop()
	if _, err := redistest.Do(s.Addr, "PING"); err == nil {
		t.Fatal("PING after Stop succeeded")
	}
	s.Restart(t)
	if got, err := redistest.Do(s.Addr, "PING"); err != nil || got != "PONG" {
		t.Fatalf("PING after Restart = %q, %v", got, err)
	}
	s.Kill()
	s.Kill() // idempotent
}

func TestStandaloneExtraArgs(t *testing.T) {
	t.Parallel()
	s := redistest.StartStandalone(t, "--client-output-buffer-limit", "pubsub 64kb 32kb 1")
	got, err := redistest.Do(s.Addr, "CONFIG", "GET", "client-output-buffer-limit")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "pubsub 65536 32768 1") {
		t.Errorf("client-output-buffer-limit = %q, want the pubsub limit set", got)
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	if len(c.Addrs) != 3 {
		t.Fatalf("got %d addrs", len(c.Addrs))
	}
	for _, a := range c.Addrs {
		info, err := redistest.Do(a, "CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			t.Errorf("%s: CLUSTER INFO = %q, %v", a, info, err)
		}
	}
}

func TestSentinel(t *testing.T) {
	t.Parallel()
	s, m := redistest.StartSentinel(t, "mymaster")
	got, err := redistest.Do(s.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
	if err != nil || strings.ReplaceAll(got, "\n", ":") != m.Addr {
		t.Errorf("sentinel master = %q, %v; want %s", got, err, m.Addr)
	}
}
