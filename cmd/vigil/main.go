// Command vigil is Vigil's one binary: the node agent, the witness, and the
// CLI that talks to any node's API.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "vigil:", err)
		os.Exit(1)
	}
}

// normalizeArgs accepts the single-dash long flags that infrastructure
// daemons traditionally use (`vigil agent -dev`), which pflag would read as
// a bundle of one-letter flags.
func normalizeArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		switch a {
		case "-dev":
			a = "--dev"
		}
		out[i] = a
	}
	return out
}
