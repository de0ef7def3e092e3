package main

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/protocol"
)

func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	prevUpper := int64(-1)
	for i := range histBuckets {
		up := histUpper(i)
		if up <= prevUpper {
			t.Fatalf("bucket %d upper %d <= previous %d", i, up, prevUpper)
		}
		if histIndex(up) != i || histIndex(prevUpper+1) != i {
			t.Fatalf("bucket %d: [%d, %d] maps to %d and %d", i, prevUpper+1, up, histIndex(prevUpper+1), histIndex(up))
		}
		if lo := prevUpper + 1; lo >= histSub && float64(up-lo+1)/float64(lo) > 1.0/64 {
			t.Fatalf("bucket %d [%d, %d] wider than 1/64 of its values", i, lo, up)
		}
		prevUpper = up
	}
	if prevUpper != histMax {
		t.Fatalf("last bucket ends at %d, want %d", prevUpper, histMax)
	}
	if histIndex(-5) != 0 || histIndex(math.MaxInt64) != histBuckets-1 {
		t.Fatal("out-of-range values are not clamped")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	var h shardedHist
	vals := make([]int64, 100_000)
	for i := range vals {
		vals[i] = int64(rng.ExpFloat64() * 2e6) // ~2 ms mean, in ns
		h.record(i, vals[i])
	}
	slices.Sort(vals)
	snap := h.snapshot()
	if snap.total != uint64(len(vals)) {
		t.Fatalf("total %d, want %d", snap.total, len(vals))
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := snap.quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/64+1 {
			t.Errorf("seed %d: quantile(%v) = %d, exact %d (want within +1/64)", seed, q, got, exact)
		}
	}
	if snap.max() < vals[len(vals)-1] {
		t.Errorf("max %d below the largest value %d", snap.max(), vals[len(vals)-1])
	}
	var empty histSnap
	if empty.quantile(0.99) != 0 || empty.max() != 0 {
		t.Error("an empty histogram must report 0")
	}
	var one histogram
	one.record(1234)
	var s histSnap
	s.add(&one)
	if got := s.quantile(0.5); got < 1234 || got > 1234+1234/64 {
		t.Errorf("single value 1234: p50 %d", got)
	}
}

func TestSeqTracker(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		seqs []uint64
		want []seqOutcome
	}{
		{"in order", []uint64{1, 2, 3}, []seqOutcome{seqNew, seqNew, seqNew}},
		{"duplicate", []uint64{1, 2, 2, 1}, []seqOutcome{seqNew, seqNew, seqDup, seqDup}},
		{"gap then late", []uint64{1, 3, 2, 4}, []seqOutcome{seqNew, seqNew, seqReorder, seqNew}},
		{"late twice is a dup", []uint64{2, 1, 1}, []seqOutcome{seqNew, seqReorder, seqDup}},
		{"gap never filled", []uint64{1, 5, 6}, []seqOutcome{seqNew, seqNew, seqNew}},
		{"start late", []uint64{3, 1, 2}, []seqOutcome{seqNew, seqReorder, seqReorder}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var tr seqTracker
			for i, s := range tc.seqs {
				if got := tr.observe(s); got != tc.want[i] {
					t.Fatalf("observe(%d) #%d = %d, want %d", s, i, got, tc.want[i])
				}
			}
		})
	}
	var tr seqTracker
	tr.observe(maxMissing * 3)
	if len(tr.missing) != maxMissing {
		t.Fatalf("missing set holds %d, want the cap %d", len(tr.missing), maxMissing)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	p := payload{phase: 5, group: 199, seq: 123456, sentNanos: time.Now().UnixNano()}
	got, ok := parsePayload(appendPayload(nil, p))
	if !ok || got != p {
		t.Fatalf("round trip: %+v %v, want %+v", got, ok, p)
	}
	for _, bad := range []string{"", "1.2.3", "1.2.3.4.5", "1..3.4", "a.2.3.4", "1.2.3.", "1.2.3.99999999999999999999", "-1.2.3.4"} {
		if _, ok := parsePayload([]byte(bad)); ok {
			t.Errorf("parsePayload(%q) accepted", bad)
		}
	}
}

func TestPublishFrameIsANonBlockingInvocation(t *testing.T) {
	t.Parallel()
	frame := publishFramePrefix(`lg-x-"3"`)
	frame = appendPayload(frame, payload{phase: 1, group: 3, seq: 7, sentNanos: 42})
	frame = append(frame, publishFrameSuffix...)
	msgs, n, err := protocol.JSON.ParseMessages(frame, 0)
	if err != nil || n != len(frame) || len(msgs) != 1 {
		t.Fatalf("ParseMessages(%q) = %v, %d, %v", frame, msgs, n, err)
	}
	inv, ok := msgs[0].(*protocol.Invocation)
	if !ok || inv.InvocationID != "" || inv.Target != "SendToGroup" || len(inv.Arguments) != 3 {
		t.Fatalf("got %#v, want SendToGroup with 3 arguments and no invocation id", msgs[0])
	}
	var group, target, pl string
	for i, dst := range []*string{&group, &target, &pl} {
		if err := protocol.JSON.Unmarshal(inv.Arguments[i].(protocol.RawValue), dst); err != nil {
			t.Fatal(err)
		}
	}
	if group != `lg-x-"3"` || target != "m" || pl != "1.3.7.42" {
		t.Fatalf("arguments %q %q %q", group, target, pl)
	}
}

// testClient is a client with no connection, for feeding records.
func testClient(group, phases int) *client {
	return &client{group: group, w: &world{lat: make([]shardedHist, phases)}, joined: make(chan error, 1), phases: make([]phaseCounts, phases)}
}

func groupRecord(t *testing.T, keysFirst bool, p payload) []byte {
	t.Helper()
	if keysFirst {
		return []byte(`{"type":1,"target":"m","arguments":["` + string(appendPayload(nil, p)) + "\"]}\x1e")
	}
	return []byte(`{"arguments":["` + string(appendPayload(nil, p)) + `"],"target":"m","type":1}` + "\x1e")
}

func TestConsumeRecords(t *testing.T) {
	t.Parallel()
	c := testClient(2, 2)
	now := time.Now().UnixNano()
	var frame []byte
	frame = append(frame, groupRecord(t, true, payload{phase: 1, group: 2, seq: 1, sentNanos: now})...)
	frame = append(frame, "{\"type\":6}\x1e"...)
	frame = append(frame, groupRecord(t, false, payload{phase: 1, group: 2, seq: 3, sentNanos: now})...) // slow path
	frame = append(frame, groupRecord(t, true, payload{phase: 1, group: 2, seq: 2, sentNanos: now})...)
	frame = append(frame, groupRecord(t, true, payload{phase: 1, group: 2, seq: 2, sentNanos: now})...)
	frame = append(frame, groupRecord(t, true, payload{phase: 1, group: 9, seq: 4, sentNanos: now})...) // other group
	frame = append(frame, "{\"type\":3,\"invocationId\":\"1\",\"error\":\"nope\"}\x1e"...)
	split := len(frame) - 5
	if rest := c.consume(frame[:split]); !bytes.Equal(rest, frame[bytes.LastIndexByte(frame[:split], 0x1e)+1:split]) {
		t.Fatalf("tail %q not kept", rest)
	} else if c.consume(append(rest, frame[split:]...)) != nil {
		t.Fatal("a complete frame left a tail")
	}
	p := &c.phases[1]
	if c.received.Load() != 4 || p.unique.Load() != 3 || p.dups.Load() != 1 || p.reorders.Load() != 1 {
		t.Fatalf("received %d unique %d dups %d reorders %d, want 4 3 1 1", c.received.Load(), p.unique.Load(), p.dups.Load(), p.reorders.Load())
	}
	if c.w.foreign.Load() != 1 || c.w.slowPath.Load() != 1 {
		t.Fatalf("foreign %d slowPath %d, want 1 1", c.w.foreign.Load(), c.w.slowPath.Load())
	}
	if snap := c.w.lat[1].snapshot(); snap.total != 3 {
		t.Fatalf("latency samples %d, want 3 (duplicates are not timed)", snap.total)
	}
	select {
	case err := <-c.joined:
		if err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("join error %v", err)
		}
	default:
		t.Fatal("the JoinGroup completion was not delivered")
	}
}

func TestProcParsers(t *testing.T) {
	t.Parallel()
	stat := []byte("1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 100 1000 200\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3.25 {
		t.Fatalf("parseStatCPU = %v, %v; want 3.25", cpu, err)
	}
	if _, err := parseStatCPU([]byte("1 (x) S 1 2")); err == nil {
		t.Fatal("a short stat line was accepted")
	}
	rss, err := parseStatusRSS([]byte("Name:\tnode\nVmPeak:\t 1 kB\nVmRSS:\t   20480 kB\nThreads: 5\n"))
	if err != nil || rss != 20480*1024 {
		t.Fatalf("parseStatusRSS = %v, %v", rss, err)
	}
	if _, err := parseStatusRSS([]byte("Name: x\n")); err == nil {
		t.Fatal("status without VmRSS was accepted")
	}
	if c, err := procCPUSeconds(0); err != nil || c < 0 {
		t.Fatalf("own CPU: %v, %v", c, err)
	}
	if r, err := procRSSBytes(0); err != nil || r <= 0 {
		t.Fatalf("own RSS: %v, %v", r, err)
	}
}

func TestFanoutPlacementAlternatesNodes(t *testing.T) {
	t.Parallel()
	const clients, groups, nodes = 2000, 200, 2
	perNode := make([]int, nodes)
	members := map[int][]int{}
	for i := range clients {
		s := fanoutPlace(i, groups, nodes)
		perNode[s.node]++
		members[s.group] = append(members[s.group], s.node)
	}
	if perNode[0] != 1000 || perNode[1] != 1000 {
		t.Fatalf("per node %v, want an even split", perNode)
	}
	for g, ns := range members {
		if len(ns) != 10 {
			t.Fatalf("group %d has %d members", g, len(ns))
		}
		for m := 1; m < len(ns); m++ {
			if ns[m] == ns[m-1] {
				t.Fatalf("group %d members %d and %d share node %d", g, m-1, m, ns[m])
			}
		}
	}
	if fanoutPlace(0, groups, nodes).node == fanoutPlace(1, groups, nodes).node {
		t.Fatal("publishers of groups 0 and 1 share a node")
	}
}
