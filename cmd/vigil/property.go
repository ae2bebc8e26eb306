package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

func newPropertyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "property",
		Short: "Cluster properties (replicated configuration)",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "set NAME=VALUE...",
		Short: "Set properties; returns once a quorum has committed each",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			type kv struct{ k, v string }
			var kvs []kv
			for _, a := range args {
				k, v, err := splitKV(a)
				if err != nil {
					return err
				}
				kvs = append(kvs, kv{k, v})
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			for _, p := range kvs {
				res, err := c.SetProperty(cmd.Context(), p.k, p.v)
				if err != nil {
					return fmt.Errorf("set %s: %w", p.k, err)
				}
				fmt.Fprintf(g.stdout, "%s=%s (epoch %d)\n", p.k, p.v, res.Epoch)
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "get NAME",
		Short: "Show one property",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			p, err := c.Property(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(p, func(w io.Writer) { fmt.Fprintln(w, p.Value) })
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List properties",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ps, err := c.Properties(cmd.Context())
			if err != nil {
				return err
			}
			if ps == nil {
				ps = []api.Property{}
			}
			return g.print(ps, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\n", p.Name, p.Value)
				}
				tw.Flush()
			})
		},
	}, &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a property",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.DeleteProperty(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "deleted %s (epoch %d)\n", args[0], res.Epoch)
			return nil
		},
	})
	return cmd
}
