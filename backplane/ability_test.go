package backplane_test

import (
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
)

type wrapper struct{ backplane.Backplane }

func (w wrapper) Unwrap() backplane.Backplane { return w.Backplane }

// TestAbilityThroughWrappers: an optional ability is found on the
// backplane itself or along its chain of wrappers, and not invented.
func TestAbilityThroughWrappers(t *testing.T) {
	m := backplane.NewMemoryBus().NewBackplane()
	for name, b := range map[string]backplane.Backplane{"direct": m, "wrapped": wrapper{m}, "twice": wrapper{wrapper{m}}} {
		a, ok := backplane.Ability[backplane.Audience](b)
		if !ok || a != backplane.Audience(m) {
			t.Errorf("%s: Audience = %v, %v; want the memory backplane", name, a, ok)
		}
		if _, ok := backplane.Ability[backplane.SharedSecrets](b); !ok {
			t.Errorf("%s: SharedSecrets not found", name)
		}
	}
	type never interface{ NoSuchAbility() }
	if _, ok := backplane.Ability[never](wrapper{m}); ok {
		t.Error("found an ability nobody has")
	}
	if _, ok := backplane.Ability[backplane.Audience](nil); ok {
		t.Error("found an ability on nil")
	}
}
