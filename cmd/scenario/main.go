// Command scenario runs a testkit scenario file and prints its steps and,
// last, "trace sha256:<hex>": in the deterministic simulation (the same
// seed gives the same trace, byte for byte), or with --real against real
// nodes and a real redis-server. It is apart from cmd/node so the server
// binary does not link the simulator.
//
//	go run ./cmd/scenario [--seed N] [--real] testkit/testdata/09-outage.scn
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hubfabric/hubfabric/testkit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runScenario(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "scenario:", err)
		os.Exit(1)
	}
}

// usageError is a bad flag or argument; its message was already printed.
type usageError struct{ error }

const usage = "usage: scenario [--seed N] [--real] FILE"

// runScenario implements "scenario [--seed N] [--real] FILE".
func runScenario(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scenario", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 0, "seed (default: the file's)")
	real := fs.Bool("real", false, "run against real nodes (WebSocket clients) and a real redis-server")
	redisAddr := fs.String("redis-server", "redis-server", "with --real: the redis-server binary to start")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, usage)
		return usageError{fmt.Errorf("want one scenario file")}
	}
	if *real {
		_, err := testkit.RunFileReal(ctx, fs.Arg(0), *redisAddr, stdout)
		return err
	}
	_, err := testkit.RunFile(fs.Arg(0), *seed, stdout)
	return err
}
