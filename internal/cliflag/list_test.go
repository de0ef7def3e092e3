package cliflag

import (
	"flag"
	"io"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestList(t *testing.T) {
	t.Parallel()
	vals := []string{"default"}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&List{Vals: &vals}, "x", "")
	if err := fs.Parse([]string{"--x", "a, b,", "--x", "c"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(vals, []string{"a", "b", "c"}) {
		t.Fatalf("vals = %q", vals)
	}
	if got := fs.Lookup("x").Value.String(); got != "a,b,c" {
		t.Fatalf("String = %q", got)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
