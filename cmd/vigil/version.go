package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			v := version
			if bi, ok := debug.ReadBuildInfo(); ok {
				v += " " + bi.GoVersion
			}
			fmt.Fprintln(g.stdout, "vigil", v)
		},
	}
}
