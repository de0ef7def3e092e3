package testkit_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/testkit"
)

// recorder is a testkit.TB that records failures instead of failing.
type recorder struct {
	errs     []string
	cleanups []func()
}

func (r *recorder) Helper()                   {}
func (r *recorder) Logf(string, ...any)       {}
func (r *recorder) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Failed() bool              { return len(r.errs) > 0 }
func (r *recorder) Errorf(f string, a ...any) { r.errs = append(r.errs, fmt.Sprintf(f, a...)) }
func (r *recorder) Fatalf(f string, a ...any) { r.Errorf(f, a...); panic(r) }
func (r *recorder) done() {
	for _, f := range r.cleanups {
		f()
	}
}
func (r *recorder) text() string { return strings.Join(r.errs, "\n") }

// buggy breaks invariants on purpose.
type buggy struct{ testkit.Relay }

// All sends twice: a duplicate.
func (buggy) All(c *hub.Context, tag string) error {
	_ = c.Clients.All().Send(c, "msg", tag)
	return c.Clients.All().Send(c, "msg", tag)
}

// Others ignores the exclusion.
func (buggy) Others(c *hub.Context, tag string) error { return c.Clients.All().Send(c, "msg", tag) }

// Group drops the message for other nodes, silently (local only).
func (buggy) Group(c *hub.Context, group, tag string) error { return nil }

func TestCheckersCatchBugs(t *testing.T) {
	r := &recorder{}
	defer r.done()
	c := testkit.NewCluster(r, testkit.Hub("relay", buggy{}))
	a := c.Client("a", "", c.Node(0))
	b := c.Client("b", "", c.Node(1))
	b.Join("g").Wait()
	a.SendAll()
	a.SendOthers()
	a.SendGroup("g")
	c.Check()
	for _, want := range []string{"duplicate: a1 received a:", "exclusion: a1 received", "lost: b1 did not receive"} {
		if !strings.Contains(r.text(), want) {
			t.Errorf("checker did not report %q; got:\n%s", want, r.text())
		}
	}
}

func TestWrongExpectationFails(t *testing.T) {
	sc, err := testkit.ParseScenario(strings.NewReader("client a\nsend a all\nexpect a received 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	defer r.done()
	sc.Run(r, 1)
	if !strings.Contains(r.text(), "received 1 messages, want 2") {
		t.Errorf("got %q", r.text())
	}
}
