package testkit_test

import (
	"strings"
	"testing"

	"github.com/hubfabric/hubfabric/testkit"
)

// TestScenarioRefusesAppsThatAreNotPrefixNames: an app name becomes a
// channel prefix (name + ":"), so one that could read as the start of
// another app's channels ("hubfabric:h:chat:g:x") is refused, like the
// Redis backplane refuses it.
func TestScenarioRefusesAppsThatAreNotPrefixNames(t *testing.T) {
	t.Parallel()
	for _, app := range []string{"hubfabric:h:chat:g:x", "a:", "a{b}", "x/y"} {
		_, err := testkit.ParseScenario(strings.NewReader("apps blue " + app + "\nclient a\n"))
		if err == nil || !strings.Contains(err.Error(), "line 1: testkit: app ") || !strings.Contains(err.Error(), "letters, digits") {
			t.Errorf("apps %q: err %v, want a line 1 error saying what a prefix may hold", app, err)
		}
	}
	if _, err := testkit.ParseScenario(strings.NewReader("apps blue green-2 v1.0_x\nclient a\n")); err != nil {
		t.Errorf("valid apps refused: %v", err)
	}
}
