package testkit_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/testkit"
)

// TestScenarios runs every testdata scenario with several seeds, twice
// each, and checks that one seed gives one trace.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.scn")
	if err != nil || len(files) < 12 {
		t.Fatalf("want at least 12 scenarios, found %d (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			sc, err := testkit.LoadScenario(f)
			if err != nil {
				t.Fatal(err)
			}
			for seed := uint64(1); seed <= 5; seed++ {
				h1 := sc.Run(t, seed).Trace().Hash()
				h2 := sc.Run(t, seed).Trace().Hash()
				if h1 != h2 {
					t.Fatalf("seed %d: two runs gave different traces: %s, %s", seed, h1, h2)
				}
				if t.Failed() {
					return
				}
			}
		})
	}
}

// simulationOnly are the scenarios whose faults (a partition, a slow or
// silent client) exist only in the simulation; --real skips those steps, so their
// expectations cannot hold there.
var simulationOnly = map[string]bool{"10-partition.scn": true, "12-slow-client.scn": true, "15-silent-client.scn": true}

// TestScenariosReal runs every other scenario against real nodes (real
// WebSocket clients) on a real redis-server, so the simulation and reality
// are checked against the same files.
func TestScenariosReal(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is needed for the real scenarios: apt-get install -y redis-server")
	}
	files, err := filepath.Glob("testdata/*.scn")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if simulationOnly[filepath.Base(f)] {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out bytes.Buffer
			if _, err := testkit.RunFileReal(ctx, f, "redis-server", &out); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
		})
	}
}

// TestScenarioNumbersAreBounded: counts in a scenario header that would
// build an absurd cluster (or none) are refused with the line and range.
func TestScenarioNumbersAreBounded(t *testing.T) {
	for _, src := range []string{"nodes 0", "nodes 100000000", "nodes -2", "max-outbound 0", "max-outbound -1"} {
		if _, err := testkit.ParseScenario(strings.NewReader(src + "\n")); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%q: err %v, want out of range", src, err)
		}
	}
	if _, err := testkit.ParseScenario(strings.NewReader("nodes 3\nmax-outbound 4096\n")); err != nil {
		t.Errorf("valid header refused: %v", err)
	}
}
