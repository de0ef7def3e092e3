package actors

import "testing"

// TestCutEchoesAreMatchedBySendNumber: a send decided before the new owner listened
// is not awaited, yet its echo may come back (it was published after the
// subscription took effect); it must not be taken for the echo of a later,
// awaited send, or that send would be dropped.
func TestCutEchoesAreMatchedBySendNumber(t *testing.T) {
	c := &cut{in: true}
	var last uint64
	own := func(name string) *send {
		return &send{payload: &payload{json: []byte(name)}}
	}
	echo := func(s *send) *send { return &send{payload: s.payload, arrived: true, echo: true, seq: s.seq} }

	early := own("early")
	if c.take(early, &last) || early.force {
		t.Fatal("a send before listening: the old owner delivers it, the new owner neither delivers nor awaits it")
	}
	c.listening = true
	late := own("late")
	if c.take(late, &last) || !late.force || late.seq == 0 {
		t.Fatalf("a send while listening, before the marker: awaited (force %v, seq %d)", late.force, late.seq)
	}
	c.seen = true // the marker arrives
	if c.take(echo(early), &last) {
		t.Fatal("the echo of the early send was delivered")
	}
	if c.done() {
		t.Fatal("the cut is done while the late send's echo is still awaited")
	}
	if !c.take(echo(late), &last) {
		t.Fatal("the echo of the late send was not delivered")
	}
	if !c.done() {
		t.Fatal("the cut is not done after its last awaited echo")
	}
	after := own("after")
	if !c.take(after, &last) || after.force {
		t.Fatal("after the cut a send is delivered at once, with no echo awaited")
	}
}

// TestCutOldOwner: the old owner delivers its own sends until it publishes
// the marker, and other nodes' until the marker comes back; echoes never.
func TestCutOldOwner(t *testing.T) {
	c := &cut{}
	var last uint64
	arrived := &send{payload: &payload{}, arrived: true}
	if !c.take(&send{payload: &payload{}}, &last) || !c.take(arrived, &last) {
		t.Fatal("before the marker the old owner delivers")
	}
	c.marked = true
	if c.take(&send{payload: &payload{}}, &last) {
		t.Fatal("an own send after the marker was published is the new owner's")
	}
	if !c.take(arrived, &last) {
		t.Fatal("another node's send ahead of the marker is the old owner's")
	}
	c.seen = true
	if c.take(arrived, &last) || c.take(&send{payload: &payload{}, arrived: true, echo: true, seq: 1}, &last) {
		t.Fatal("after the marker came back the old owner delivers nothing")
	}
}
