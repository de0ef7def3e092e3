package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/hubfabric/hubfabric/testkit"
)

// runScenario implements "node scenario run [--seed N] [--real] FILE".
func runScenario(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(stderr, "usage: node scenario run [--seed N] [--real] FILE")
		return usageError{fmt.Errorf("unknown scenario command")}
	}
	fs := flag.NewFlagSet("scenario run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 0, "seed (default: the file's)")
	real := fs.Bool("real", false, "run against real nodes (WebSocket clients) and a real redis-server")
	redisAddr := fs.String("redis-server", "redis-server", "with --real: the redis-server binary to start")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: node scenario run [--seed N] [--real] FILE")
		return usageError{fmt.Errorf("want one scenario file")}
	}
	if *real {
		_, err := testkit.RunFileReal(ctx, fs.Arg(0), *redisAddr, stdout)
		return err
	}
	_, err := testkit.RunFile(fs.Arg(0), *seed, stdout)
	return err
}
