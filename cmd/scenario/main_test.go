package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

func TestScenarioRunPrintsStepsAndTrace(t *testing.T) {
	run := func(args ...string) string {
		var out, errOut bytes.Buffer
		if err := runScenario(context.Background(), args, &out, &errOut); err != nil {
			t.Fatalf("%v\n%s%s", err, out.String(), errOut.String())
		}
		return out.String()
	}
	a := run("--seed", "5", "../../testkit/testdata/05-remote-group-ops.scn")
	b := run("--seed", "5", "../../testkit/testdata/05-remote-group-ops.scn")
	lines := strings.Split(strings.TrimSpace(a), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^trace sha256:[0-9a-f]{64}$`).MatchString(last) {
		t.Fatalf("last line %q", last)
	}
	if !strings.Contains(a, "add a b room") {
		t.Errorf("steps not printed:\n%s", a)
	}
	if a != b {
		t.Errorf("same seed, different output:\n%s\n---\n%s", a, b)
	}
	var out, errOut bytes.Buffer
	if err := runScenario(context.Background(), nil, &out, &errOut); err == nil {
		t.Errorf("no file: want a usage error")
	}
}
