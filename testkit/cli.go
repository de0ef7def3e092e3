package testkit

import (
	"fmt"
	"io"
	"strings"
)

// cliTB is the TB of a scenario run from the command line.
type cliTB struct {
	w        io.Writer
	errs     []string
	cleanups []func()
}

type cliFatal struct{}

func (t *cliTB) Helper()                   {}
func (t *cliTB) Logf(f string, a ...any)   { fmt.Fprintf(t.w, f+"\n", a...) }
func (t *cliTB) Errorf(f string, a ...any) { t.errs = append(t.errs, fmt.Sprintf(f, a...)) }
func (t *cliTB) Fatalf(f string, a ...any) { t.Errorf(f, a...); panic(cliFatal{}) }
func (t *cliTB) Failed() bool              { return len(t.errs) > 0 }
func (t *cliTB) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }

// RunFile runs the scenario in path on a simulated cluster with seed (0:
// the file's), printing its steps and, as the last line, "trace
// sha256:<hex>". It returns an error when a step, an expectation or an
// invariant failed; the trace is printed then.
func RunFile(path string, seed uint64, w io.Writer) (hash string, err error) {
	sc, err := LoadScenario(path)
	if err != nil {
		return "", err
	}
	if seed == 0 {
		seed = sc.Seed
	}
	if *seedFlag != 0 {
		seed = *seedFlag
	}
	fmt.Fprintf(w, "scenario %q: %d nodes, seed %d\n", sc.Name, sc.Nodes, seed)
	for _, st := range sc.Steps {
		fmt.Fprintf(w, "  %3d  %s\n", st.Line, st)
	}
	t := &cliTB{w: w}
	var c *Cluster
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(cliFatal); !ok {
					panic(r)
				}
			}
		}()
		c = sc.Run(t, seed)
	}()
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	if c != nil {
		fmt.Fprintf(w, "%s; %d steps, virtual time %s\n", c.chk.Summary(), c.s.Steps(), c.s.Now())
		hash = c.trace.Hash()
	}
	if t.Failed() {
		err = fmt.Errorf("scenario failed:\n%s", strings.Join(t.errs, "\n"))
		fmt.Fprintln(w, "FAIL")
	} else {
		fmt.Fprintln(w, "ok: expectations met, invariants hold")
	}
	fmt.Fprintf(w, "trace %s\n", hash)
	return hash, err
}
