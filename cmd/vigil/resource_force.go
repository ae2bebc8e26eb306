package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

// forceStartFlags are the flags of `vigil resource force-start`.
type forceStartFlags struct {
	node    string
	yes     bool
	timeout time.Duration
}

// forceDanger is what an operator must accept before a forced start.
const forceDanger = "force-start runs the resource agent's start on NODE directly, outside the cluster: " +
	"the cluster neither places nor records it, and the resource may end up active on two nodes " +
	"(only the agent's own guards, such as vigil:vm's disk lease, can refuse)"

func newResourceForceStartCmd(g *globals) *cobra.Command {
	var f forceStartFlags
	cmd := &cobra.Command{
		Use:   "force-start ID --node NODE --yes",
		Short: "Debugging: run a resource agent's start on NODE outside the cluster (like crm_resource --force-start)",
		Long: `Run the start action of resource ID's agent, with its configuration and its start
timeout, directly on NODE, and print the agent's exit code and what it said. For debugging
an agent or a resource: the cluster neither places nor records this start, and nothing
stops a resource that runs elsewhere. The cluster learns of a forced start only when it
probes again ('vigil resource cleanup ID').

A cloned resource is named by instance (web-clone:0). NODE's own API is asked: NODE must
be up. Without --yes nothing is done.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				ctx, cancel := context.WithTimeout(ctx, f.timeout)
				defer cancel()
				return forceStart(ctx, g, c, args[0], f)
			})
		},
	}
	cmd.Flags().StringVar(&f.node, "node", "", "the node that runs the start")
	cmd.Flags().BoolVar(&f.yes, "yes", false, "I know the cluster does not record this start and the resource may run twice")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 10*time.Minute, "give up waiting for the node's answer after this long (the agent's start timeout bounds the start itself)")
	return cmd
}

// check refuses a forced start before anything is asked of the cluster.
func (f forceStartFlags) check() error {
	if f.node == "" {
		return errors.New("force-start: --node: name the node that runs the start")
	}
	if !f.yes {
		return fmt.Errorf("not started: %s; re-run with --yes to do it", forceDanger)
	}
	if f.timeout <= 0 {
		return fmt.Errorf("force-start: --timeout %s: want a positive duration", f.timeout)
	}
	return nil
}

// forceStart finds the node's API endpoints in the cluster's status and
// asks that node itself to run the start: a forced start must run where
// the operator said or not at all.
func forceStart(ctx context.Context, g *globals, c *api.Client, id string, f forceStartFlags) error {
	links, err := nodeEndpoints(ctx, c, f.node)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "WARNING: running the start of %s on %s outside the cluster: the cluster does not record it.\n", id, f.node)
	res, err := c.WithEndpoints(links).ForceStart(ctx, id, api.ForceStartRequest{Node: f.node, Yes: true})
	if err != nil {
		return fmt.Errorf("force-start of %s on %s: %w", id, f.node, err)
	}
	if err := g.print(res, func(w io.Writer) { writeForceResult(w, res) }); err != nil {
		return err
	}
	if !res.OK() {
		return fmt.Errorf("force-start of %s on %s failed: rc %d (%s): %s", id, f.node, res.RC, res.RCName, forceWhy(res))
	}
	return nil
}

// nodeEndpoints returns the API endpoints (links) of node, refusing an
// unknown node and a witness.
func nodeEndpoints(ctx context.Context, c *api.Client, node string) ([]string, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("force-start: read the cluster's nodes: %w", err)
	}
	var names []string
	for _, n := range st.Nodes {
		names = append(names, n.Name)
		if n.Name != node {
			continue
		}
		if n.Role == "witness" {
			return nil, fmt.Errorf("force-start: %s is a witness: it runs no resources", node)
		}
		var links []string
		for _, l := range n.Links {
			links = append(links, l.Addr)
		}
		if len(links) == 0 {
			return nil, fmt.Errorf("force-start: no address known for %s", node)
		}
		return links, nil
	}
	slices.Sort(names)
	return nil, fmt.Errorf("force-start: unknown node %q (nodes: %s): nothing started", node, strings.Join(names, ", "))
}

// forceWhy is the agent's account of a failure: its error, else its
// output.
func forceWhy(res api.ForceResult) string {
	return firstNonEmpty(res.Error, res.Output, "the agent said nothing")
}

func writeForceResult(w io.Writer, res api.ForceResult) {
	if !res.OK() {
		// The error returned says why; here only what ran.
		fmt.Fprintf(w, "%s %s of %s on %s: rc %d (%s) after %s\n", res.Agent, res.Action, res.Resource, res.Node, res.RC, res.RCName, res.Duration.Round(time.Millisecond))
		if res.Output != "" && res.Error != "" {
			fmt.Fprintf(w, "  output: %s\n", res.Output)
		}
		return
	}
	fmt.Fprintf(w, "%s %s of %s on %s: OK after %s\n", res.Agent, res.Action, res.Resource, res.Node, res.Duration.Round(time.Millisecond))
	if res.Output != "" {
		fmt.Fprintf(w, "  output: %s\n", res.Output)
	}
	fmt.Fprintln(w, "The cluster has no record of this start: `vigil resource cleanup` of the resource makes it probe again.")
}
