package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

func newFenceCmd(g *globals) *cobra.Command {
	cmd := newFenceNodeCmd(g)
	var yes bool
	confirm := &cobra.Command{
		Use:   "confirm NODE --yes",
		Short: "Confirm, as an operator, that NODE is down so that its resources can be recovered",
		Long: `Record that NODE is down (powered off, or otherwise certainly not running anything),
so that what it ran may be started elsewhere. Vigil cannot check this: if NODE is in fact
running, its resources will run twice. Refused while NODE is a member in the answering
node's view. Without --yes, prints what would be released and changes nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := args[0]
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.FenceConfirm(ctx, node, api.FenceConfirmRequest{Yes: yes})
				if err != nil {
					return err
				}
				if !yes {
					fmt.Fprintln(g.stderr, fenceWarning(node, res))
					return errors.New("not confirmed: nothing changed; re-run with --yes once you are sure " + node + " is off")
				}
				return g.print(res, func(w io.Writer) {
					fmt.Fprintf(w, "%s confirmed down by the operator.\n", node)
					writeReleased(w, res)
				})
			})
		},
	}
	confirm.Flags().BoolVar(&yes, "yes", false, "confirm: I know the node is down")
	cmd.AddCommand(confirm)
	addFenceCmds(g, cmd)
	return cmd
}

// fenceWarning is the loud warning shown before a confirmation.
func fenceWarning(node string, res api.FenceConfirmResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "WARNING: confirming that %s is down. If it is in fact running, its resources will run twice.\n", node)
	fmt.Fprintf(&b, "Make sure it is powered off (or its storage and network cut) before confirming.\n")
	writeReleased(&b, res)
	return strings.TrimRight(b.String(), "\n")
}

func writeReleased(w io.Writer, res api.FenceConfirmResult) {
	verb := "would be released"
	if res.Confirmed {
		verb = "released"
	}
	if len(res.Released) == 0 {
		fmt.Fprintf(w, "No resource records on %s %s.\n", res.Node, verb)
	} else {
		fmt.Fprintf(w, "Resource records on %s %s (they may now be recovered elsewhere):\n", res.Node, verb)
		for _, r := range res.Released {
			fmt.Fprintln(w, "  "+r)
		}
	}
	if len(res.Tasks) > 0 {
		fmt.Fprintf(w, "Unanswered tasks for %s dropped:\n", res.Node)
		for _, t := range res.Tasks {
			fmt.Fprintln(w, "  "+t)
		}
	}
}
