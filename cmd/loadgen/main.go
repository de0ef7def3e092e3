// Command loadgen is hubfabric's load generator: it drives a deployment
// over the SignalR JSON protocol and reports throughput, loss, ordering,
// latency, and the CPU and memory of the node and Redis processes.
//
//	go run ./cmd/node --addr 127.0.0.1:8080 &
//	go run ./cmd/loadgen --url http://127.0.0.1:8080/hubs/chat \
//	    --clients 2000 --groups 200 --rates 1000,5000,10000 --pids $(pgrep -n node)
//	go run ./cmd/loadgen --mode idle --clients 10000 --url ... --pids ...
//	go run ./cmd/loadgen --quick    # self-check on two in-process nodes
//
// Run with -h for every flag and its default. Results go to stdout as a
// Markdown table, and to --json / --markdown files; a progress line is
// rewritten on stderr once per second.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// errQuickFailed is returned by a --quick run that saw loss, duplicates or
// reorders.
var errQuickFailed = errors.New("quick check failed")

// run is the whole program. Results that were measured are written even
// when a later step fails.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	if o.mode == faultsMode {
		return runFaults(ctx, o, stdout, stderr)
	}
	urls := o.urls
	if len(urls) == 0 { // --quick without --url
		qc, err := startQuickCluster(ctx, 2)
		if err != nil {
			return fmt.Errorf("starting in-process nodes: %w", err)
		}
		defer func() {
			if serr := qc.stop(); serr != nil && err == nil {
				err = fmt.Errorf("stopping in-process nodes: %w", serr)
			}
		}()
		urls = qc.urls
		fmt.Fprintf(stderr, "quick: two in-process nodes on one in-memory bus: %v\n", urls)
	}
	var progress io.Writer
	if o.progress {
		progress = stderr
	}
	rep := newReport(o, urls, time.Now())
	var runErr error
	switch o.mode {
	case "idle":
		rep.Idle, runErr = runIdle(ctx, o, urls, progress, stderr)
	case "chaos":
		rep.Chaos, runErr = runChaos(ctx, o, urls, progress, stderr)
	default:
		var cr connectResult
		rep.Steps, cr, runErr = runFanout(ctx, o, urls, progress, stderr)
		rep.ConnectS = cr.seconds
		if o.quick {
			rep.Problems = quickProblems(rep.Steps)
		}
	}
	if rep.Idle == nil && len(rep.Steps) == 0 && rep.Chaos == nil {
		return runErr
	}
	md := markdown(rep)
	fmt.Fprint(stdout, md)
	if o.markdownPath != "" {
		if err := os.WriteFile(o.markdownPath, []byte(md), 0o644); err != nil {
			return errors.Join(runErr, err)
		}
	}
	if o.jsonPath != "" {
		if err := writeJSON(o.jsonPath, rep); err != nil {
			return errors.Join(runErr, err)
		}
	}
	if runErr != nil {
		return runErr
	}
	if len(rep.Problems) > 0 {
		for _, p := range rep.Problems {
			fmt.Fprintln(stderr, "quick:", p)
		}
		return errQuickFailed
	}
	if o.quick {
		fmt.Fprintln(stderr, "quick: ok (no loss, duplicates or reorders)")
	}
	return nil
}
