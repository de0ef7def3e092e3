// Command node runs a hubfabric node with the built-in relay hub.
//
//	go run ./cmd/node --addr :8080 --hub chat
//
// Every flag has an environment equivalent: HUBFABRIC_ plus the flag name in
// upper case with '-' as '_' (HUBFABRIC_JWT_SECRET). Flags win over the
// environment.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr); err != nil {
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "node:", err)
		os.Exit(1)
	}
}

// usageError is a bad flag or value; its message was already printed.
type usageError struct{ error }
