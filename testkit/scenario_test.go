package testkit_test

import (
	"path/filepath"
	"testing"

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
