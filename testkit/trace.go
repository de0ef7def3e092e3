package testkit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Trace is the record of one simulation: every step, delivery, client
// event and fault, with its virtual time. Its hash identifies a run: one
// seed gives one trace.
type Trace struct {
	mu    sync.Mutex
	lines []traceLine
}

type traceLine struct {
	at   time.Duration
	kind string // step (mailbox runs, goroutines, timers), or an event kind
	text string
}

func (t *Trace) add(at time.Duration, kind, text string) {
	t.mu.Lock()
	t.lines = append(t.lines, traceLine{at, kind, text})
	t.mu.Unlock()
}

func (l traceLine) String() string {
	return fmt.Sprintf("%11.6fs %-7s %s", l.at.Seconds(), l.kind, l.text)
}

// Hash is "sha256:<hex>" over every line.
func (t *Trace) Hash() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := sha256.New()
	for _, l := range t.lines {
		io.WriteString(h, l.String())
		h.Write([]byte{'\n'})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Len is the number of lines.
func (t *Trace) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.lines)
}

// Events returns the readable part: everything except scheduler steps
// (who sent what, who received what, faults), one line each.
func (t *Trace) Events() string { return t.format(false) }

// Full returns every line, scheduler steps included.
func (t *Trace) Full() string { return t.format(true) }

func (t *Trace) format(all bool) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	for _, l := range t.lines {
		if !all && l.kind == "step" {
			continue
		}
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}
