package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

func newExplainCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "explain RESOURCE",
		Short: "Why a resource is where it is (or would be): the scheduler's reasons and scores",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				ex, err := c.Explain(ctx, args[0])
				if err != nil {
					return err
				}
				return g.print(ex, func(w io.Writer) { fmt.Fprint(w, ex.Text) })
			})
		},
	}
}
