package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hubfabric/hubfabric/internal/faultload"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// faultsMode runs fan-out between two in-process nodes on a redis-server
// of its own and injects, one after the other, a Redis restart, a node
// restart and a 5 s Redis pause (internal/faultload). Per fault: --warmup
// of traffic before it, --duration after the repair, at the first of
// --rates sends/s, over --groups groups of 4 members (2 per node), then up
// to --drain for deliveries. It prints the fault table.
const faultsMode = "faults"

func runFaults(ctx context.Context, o options, stdout, stderr io.Writer) error {
	dir, err := os.MkdirTemp("", "loadgen-faults-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := redistest.Launch(dir)
	if err != nil {
		return err
	}
	defer srv.Kill()
	rate := 1000.0
	if len(o.rates) > 0 {
		rate = o.rates[0]
	}
	fmt.Fprintf(stderr, "faults: redis-server %s, 2 nodes, %d groups, %.0f sends/s, %v before, %v after each fault\n",
		srv.Addr, o.groups, rate, o.warmup, o.duration)
	fmt.Fprintln(stdout, "| fault | sends | failed loudly | lost silently | lost, gap counted | duplicated | delivered | gaps | outage | recovery |")
	fmt.Fprintln(stdout, "|---|---|---|---|---|---|---|---|---|---|")
	for _, f := range faultload.Faults {
		res, err := faultload.Run(ctx, faultload.Config{
			Redis: faultload.Server(srv), Groups: o.groups, Rate: rate,
			Before: o.warmup, After: o.duration, Drain: o.drain, Pause: 5 * time.Second, Seed: o.seed,
		}, f)
		if err != nil {
			return fmt.Errorf("fault %s: %w", f, err)
		}
		rec := "none"
		if res.Recovery >= 0 {
			rec = res.Recovery.Round(time.Millisecond).String()
		}
		fmt.Fprintf(stdout, "| %s | %d | %d | %d | %d | %d | %d | %d | %v | %s |\n", f, res.Sent, res.FailedLoudly,
			res.LostSilently, res.LostGap, res.Duplicates, res.Delivered, res.Gaps, res.Outage.Round(time.Millisecond), rec)
	}
	return nil
}
