package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

func newSimulateCmd(g *globals) *cobra.Command {
	var req api.SimulateRequest
	var from string
	cmd := &cobra.Command{
		Use:   "simulate [--node-fail NODE]... [--resource-fail RESOURCE]... [--from FILE]",
		Short: "Show what the scheduler would do after failures, and why; changes nothing",
		Long: `Run the scheduler on the current state (or on FILE) with hypothetical failures and
print its plan with reasons. Nothing changes.

  --node-fail N      N fails and is taken as fenced (offline with proof): what it ran
                     is gone and may be recovered elsewhere at once
  --resource-fail R  R fails where it runs (recorded failed, fail count + 1)
  --from FILE        start from FILE instead: a snapshot (config, nodes, resources,
                     pending) or a configuration (simulated with the current nodes and
                     resource states); YAML or JSON`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if from != "" {
				doc, err := readFileArg(from)
				if err != nil {
					return err
				}
				req.From = string(doc)
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.Simulate(ctx, req)
				if err != nil {
					return err
				}
				return g.print(res, func(w io.Writer) {
					if len(res.Notes) > 0 {
						fmt.Fprintln(w, "Assuming:")
						for _, n := range res.Notes {
							fmt.Fprintln(w, "  "+n)
						}
					}
					fmt.Fprint(w, res.Plan)
				})
			})
		},
	}
	cmd.Flags().StringSliceVar(&req.NodeFail, "node-fail", nil, "a node that fails (repeat, or comma-separated)")
	cmd.Flags().StringSliceVar(&req.ResourceFail, "resource-fail", nil, "a resource that fails where it runs (repeat, or comma-separated)")
	cmd.Flags().StringVar(&from, "from", "", "a snapshot or configuration file (YAML or JSON; - for stdin)")
	return cmd
}
