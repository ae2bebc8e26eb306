package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/config"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Node settings: standby, maintenance, attributes, utilization",
	}
	yes, no := true, false
	for _, s := range []struct {
		verb, short string
		req         api.NodeUpdate
	}{
		{"standby", "Run nothing on NODE: its resources move away", api.NodeUpdate{Standby: &yes}},
		{"unstandby", "Let NODE run resources again", api.NodeUpdate{Standby: &no}},
		{"maintenance", "Leave NODE's resources alone: no starts, stops or monitors there", api.NodeUpdate{Maintenance: &yes}},
		{"unmaintenance", "Manage NODE's resources again", api.NodeUpdate{Maintenance: &no}},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   s.verb + " [NODE]",
			Short: s.short + " (default: this node)",
			Args:  cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				node, err := g.nodeArg(args)
				if err != nil {
					return err
				}
				return g.updateNode(cmd, node, s.req, s.verb+" "+node)
			},
		})
	}
	for _, s := range []struct{ verb, short string }{
		{"attribute", "Set node attributes for location rules (k= removes k)"},
		{"utilization", "Set a node's capacity, e.g. cpu=4 memory=8192 (k= removes k)"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   s.verb + " NODE k=v...",
			Short: s.short,
			Args:  cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				kv := map[string]string{}
				for _, a := range args[1:] {
					k, v, err := splitKV(a)
					if err != nil {
						return err
					}
					if _, dup := kv[k]; dup {
						return fmt.Errorf("%s given twice", k)
					}
					kv[k] = v
				}
				req := api.NodeUpdate{Attributes: kv}
				if s.verb == "utilization" {
					req = api.NodeUpdate{Utilization: kv}
				}
				return g.updateNode(cmd, args[0], req, "node "+args[0]+": "+s.verb+" "+kvList(kv))
			},
		})
	}
	return cmd
}

// nodeArg returns the node named in args, or this node (from the node
// configuration) when none is.
func (g *globals) nodeArg(args []string) (string, error) {
	if len(args) == 1 {
		return args[0], nil
	}
	f, err := config.Load(g.configFile())
	if err != nil {
		return "", fmt.Errorf("name the node: %w", err)
	}
	return f.Node, nil
}

func (g *globals) updateNode(cmd *cobra.Command, node string, req api.NodeUpdate, what string) error {
	return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
		res, err := c.UpdateNode(ctx, node, req)
		if err != nil {
			return err
		}
		writeResult(g.stdout, what, res)
		return nil
	})
}
