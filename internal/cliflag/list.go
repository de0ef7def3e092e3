// Package cliflag holds flag.Value types shared by the commands.
package cliflag

import "strings"

// List is a repeatable, comma-separated string flag: "--x a,b --x c" gives
// [a b c]. The first Set replaces the default held in *Vals; empty items
// are dropped and items are trimmed. Not safe for concurrent use (flags are
// parsed once, by one goroutine).
type List struct {
	Vals *[]string
	set  bool
}

// String joins the values with commas.
func (l *List) String() string {
	if l.Vals == nil {
		return ""
	}
	return strings.Join(*l.Vals, ",")
}

// Set adds the comma-separated items of s.
func (l *List) Set(s string) error {
	if !l.set {
		*l.Vals = nil
		l.set = true
	}
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l.Vals = append(*l.Vals, v)
		}
	}
	return nil
}
