package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

// resourceArgs are the pcs-style words after `resource create ID AGENT` or
// `resource update ID`:
//
//	[k=v ...] [op NAME [interval=10s] [timeout=20s] [on-fail=restart]]... [meta k=v ...] [utilization k=v ...]
type resourceArgs struct {
	params, meta, util map[string]string
	ops                []api.Op
}

// Section keywords of resourceArgs.
const (
	kwOp          = "op"
	kwMeta        = "meta"
	kwUtilization = "utilization"
)

// parseResourceArgs parses resourceArgs. With allowEmpty, "k=" (an empty
// value) is kept, meaning "remove k"; otherwise it is an error.
func parseResourceArgs(args []string, allowEmpty bool) (resourceArgs, error) {
	var out resourceArgs
	section := "params"
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch a {
		case kwOp:
			if i+1 >= len(args) || strings.Contains(args[i+1], "=") || isKeyword(args[i+1]) {
				return out, errors.New("op: want op NAME [interval=D] [timeout=D] [on-fail=POLICY], e.g. op monitor interval=10s")
			}
			i++
			out.ops = append(out.ops, api.Op{Name: args[i]})
			section = kwOp
			continue
		case kwMeta, kwUtilization:
			section = a
			continue
		}
		k, v, err := splitKV(a)
		if err != nil {
			return out, fmt.Errorf("%q: want key=value, or one of op NAME, meta, utilization", a)
		}
		if v == "" && !allowEmpty {
			return out, fmt.Errorf("%q: empty value (leave the key out to leave it unset)", a)
		}
		switch section {
		case "params":
			if err := setOnce(&out.params, "parameter", k, v); err != nil {
				return out, err
			}
		case kwMeta:
			if err := setOnce(&out.meta, "meta attribute", k, v); err != nil {
				return out, err
			}
		case kwUtilization:
			if err := setOnce(&out.util, "utilization", k, v); err != nil {
				return out, err
			}
		case kwOp:
			op := &out.ops[len(out.ops)-1]
			var dst *string
			switch k {
			case "interval":
				dst = &op.Interval
			case "timeout":
				dst = &op.Timeout
			case "on-fail", "on_fail":
				dst = &op.OnFail
			default:
				return out, fmt.Errorf("op %s: unknown option %q (known: interval, timeout, on-fail)", op.Name, k)
			}
			if *dst != "" {
				return out, fmt.Errorf("op %s: %s given twice", op.Name, k)
			}
			*dst = v
		}
	}
	return out, nil
}

func isKeyword(s string) bool { return s == kwOp || s == kwMeta || s == kwUtilization }

func setOnce(m *map[string]string, what, k, v string) error {
	if *m == nil {
		*m = map[string]string{}
	}
	if _, ok := (*m)[k]; ok {
		return fmt.Errorf("%s %s given twice", what, k)
	}
	(*m)[k] = v
	return nil
}

// writeResult reports a committed (or unneeded) change.
func writeResult(w io.Writer, what string, res api.WriteResult) {
	if res.Unchanged {
		fmt.Fprintf(w, "%s: nothing to change (epoch %d)\n", what, res.Epoch)
		return
	}
	fmt.Fprintf(w, "%s (epoch %d)\n", what, res.Epoch)
	// Say what went along with it: constraints naming a deleted resource,
	// a group left empty and its clone.
	for _, ch := range res.Changes {
		key, ok := strings.CutPrefix(ch, "- ")
		if !ok {
			continue
		}
		for _, side := range []string{"config/constraints/", "config/groups/", "config/clones/"} {
			if rest, ok := strings.CutPrefix(key, side); ok {
				fmt.Fprintf(w, "  also removed %s %s\n", strings.TrimSuffix(strings.TrimPrefix(side, "config/"), "s/"), strings.ReplaceAll(rest, "/", " "))
			}
		}
	}
}

// withClient runs fn with an API client and the command's context.
func (g *globals) withClient(cmd *cobra.Command, fn func(ctx context.Context, c *api.Client) error) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	return fn(cmd.Context(), c)
}

func newResourceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resource",
		Short: "Create, change and inspect resources (pcs style)",
	}
	cmd.AddCommand(
		newResourceCreateCmd(g),
		newResourceListCmd(g),
		newResourceShowCmd(g),
		newResourceUpdateCmd(g),
		newResourceDeleteCmd(g),
		newResourceRoleCmd(g, "enable", "Let a resource run (removes target-role=Stopped)", ""),
		newResourceRoleCmd(g, "disable", "Stop a resource and keep it stopped (target-role=Stopped)", "Stopped"),
		newResourceNodeCmd(g, "move", "Move a resource to NODE (location cli-prefer-ID: +INFINITY on NODE)"),
		newResourceNodeCmd(g, "ban", "Keep a resource off NODE (location cli-ban-ID-on-NODE: -INFINITY)"),
		&cobra.Command{
			Use:   "clear ID",
			Short: "Remove the constraints that move and ban made for ID",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
					res, err := c.ClearResource(ctx, args[0])
					if err != nil {
						return err
					}
					writeResult(g.stdout, "cleared move and ban constraints of "+args[0], res)
					return nil
				})
			},
		},
		newResourceRequestCmd(g, "restart", "Restart a resource where it runs"),
		newResourceRequestCmd(g, "cleanup", "Forget a resource's failures: probe it again and reset its fail count on every node"),
		newResourceForceStartCmd(g),
		newResourceGroupCmd(g),
		newResourceCloneCmd(g),
	)
	return cmd
}

func newResourceCreateCmd(g *globals) *cobra.Command {
	var group string
	var disabled bool
	cmd := &cobra.Command{
		Use:   "create ID AGENT [k=v ...] [op NAME k=v ...]... [meta k=v ...] [utilization k=v ...]",
		Short: "Create a resource",
		Long: `Create a resource. AGENT is ocf:PROVIDER:TYPE (ocf:heartbeat:IPaddr2) or vigil:TYPE
(vigil:dummy, vigil:process, vigil:ip). Parameters are checked against the agent's meta-data.

  vigil resource create vip ocf:heartbeat:IPaddr2 ip=192.0.2.10 cidr_netmask=24 \
      op monitor interval=10s timeout=20s on-fail=restart meta resource-stickiness=100

Durations are Go durations (10s, 1m) or a bare number of seconds.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ra, err := parseResourceArgs(args[2:], false)
			if err != nil {
				return err
			}
			req := api.CreateResourceRequest{
				Resource: api.Resource{ID: args[0], Agent: args[1], Params: ra.params, Meta: ra.meta, Ops: ra.ops, Utilization: ra.util},
				Group:    group, Disabled: disabled,
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.CreateResource(ctx, req)
				if err != nil {
					return err
				}
				what := "created " + args[0]
				if group != "" {
					what += " in group " + group
				}
				writeResult(g.stdout, what, res)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&group, "group", "", "add the resource to this group (created if new)")
	cmd.Flags().BoolVar(&disabled, "disabled", false, "create it stopped (target-role=Stopped)")
	return cmd
}

func newResourceUpdateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "update ID [k=v ...] [op NAME k=v ...]... [meta k=v ...] [utilization k=v ...]",
		Short: "Change a resource's parameters, operations, meta attributes or utilization",
		Long: `Change a resource. k= (an empty value) removes k. An op given replaces every
configured op of that name. On a group or clone, only meta attributes can be set.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ra, err := parseResourceArgs(args[1:], true)
			if err != nil {
				return err
			}
			req := api.UpdateResourceRequest{Params: ra.params, Meta: ra.meta, Utilization: ra.util, Ops: ra.ops}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.UpdateResource(ctx, args[0], req)
				if err != nil {
					return err
				}
				writeResult(g.stdout, "updated "+args[0], res)
				return nil
			})
		},
	}
}

func newResourceRoleCmd(g *globals, verb, short, role string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.UpdateResource(ctx, args[0], api.UpdateResourceRequest{Meta: map[string]string{"target-role": role}})
				if err != nil {
					return err
				}
				writeResult(g.stdout, verb+"d "+args[0], res)
				return nil
			})
		},
	}
}

func newResourceNodeCmd(g *globals, verb, short string) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   verb + " ID NODE",
		Short: short,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				call := c.MoveResource
				what := fmt.Sprintf("%s prefers %s (constraint cli-prefer-%s; `vigil resource clear %s` removes it)", args[0], args[1], args[0], args[0])
				if verb == "ban" {
					call = c.BanResource
					what = fmt.Sprintf("%s banned from %s (constraint cli-ban-%s-on-%s; `vigil resource clear %s` removes it)", args[0], args[1], args[0], args[1], args[0])
				}
				res, err := call(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				writeResult(g.stdout, what, res)
				if !wait {
					return nil
				}
				wctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				return waitMove(wctx, g.stdout, c, args[0], args[1])
			})
		},
	}
	if verb == "move" {
		cmd.Flags().BoolVar(&wait, "wait", false, "wait until it runs on NODE, showing a live migration's progress (transferred, remaining, dirty rate, ETA)")
		cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait: give up waiting after this long")
	}
	return cmd
}

func newResourceRequestCmd(g *globals, verb, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				call := c.RestartResource
				if verb == "cleanup" {
					call = c.CleanupResource
				}
				res, err := call(ctx, args[0])
				if err != nil {
					return err
				}
				return g.print(res, func(w io.Writer) {
					for _, k := range res.Requests {
						// status/<verb>/<node>/<inst>
						parts := strings.SplitN(k, "/", 4)
						if len(parts) == 4 {
							fmt.Fprintf(w, "%s requested for %s on %s\n", verb, parts[3], parts[2])
						} else {
							fmt.Fprintln(w, k)
						}
					}
				})
			})
		},
	}
}

func newResourceDeleteCmd(g *globals) *cobra.Command {
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a resource that is disabled and stopped (and the constraints naming it)",
		Long: `Delete a resource and the constraints that name it; it leaves its group (a group
left empty goes, and its clone). The resource must be disabled and stopped everywhere
first: run 'vigil resource disable ID', or give --force to disable it, wait until it is
stopped everywhere, then delete it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				if force {
					if err := disableAndWait(ctx, g.stdout, c, id, timeout); err != nil {
						return err
					}
				}
				res, err := c.DeleteResource(ctx, id)
				if err != nil {
					return err
				}
				writeResult(g.stdout, "deleted "+id, res)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "disable the resource and wait until it is stopped everywhere before deleting it")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "with --force, how long to wait for the resource to stop")
	return cmd
}

// disableAndWait disables id and waits until no node records it anything
// but stopped.
func disableAndWait(ctx context.Context, w io.Writer, c *api.Client, id string, timeout time.Duration) error {
	res, err := c.UpdateResource(ctx, id, api.UpdateResourceRequest{Meta: map[string]string{"target-role": "Stopped"}})
	if err != nil {
		return err
	}
	writeResult(w, "disabled "+id, res)
	fmt.Fprintf(w, "waiting for %s to stop everywhere...\n", id)
	deadline := time.Now().Add(timeout)
	for {
		d, err := c.Resource(ctx, id)
		if err != nil {
			return err
		}
		if stoppedEverywhere(d) {
			return nil
		}
		if time.Now().After(deadline) {
			var where []string
			for _, in := range d.Instances {
				if in.State != "stopped" {
					where = append(where, fmt.Sprintf("%s %s on %s", in.Instance, in.State, in.Node))
				}
			}
			return fmt.Errorf("%s did not stop within %s (%s): it stays disabled; see `vigil resource show %s`", id, timeout, strings.Join(where, ", "), id)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func stoppedEverywhere(d api.ResourceDetail) bool {
	for _, in := range d.Instances {
		if in.State != "stopped" {
			return false
		}
	}
	for _, r := range d.Records {
		if r.State != "stopped" {
			return false
		}
	}
	return true
}

func newResourceListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List resources with their state and node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				rs, err := c.Resources(ctx)
				if err != nil {
					return err
				}
				return g.print(rs, func(w io.Writer) { writeResourceList(w, rs) })
			})
		},
	}
}

func writeResourceList(w io.Writer, rs []api.ResourceSummary) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "no resources")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGENT\tSTATE\tNODE\tNOTE")
	for _, r := range rs {
		if len(r.Instances) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Agent, "stopped", "-", "")
		}
		for _, in := range r.Instances {
			id := r.ID
			if in.Instance != r.ID {
				id = in.Instance
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, r.Agent, in.State, orDash(in.Node), in.Note)
		}
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newResourceShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a resource's configuration, its state on every node and its fail counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				d, err := c.Resource(ctx, args[0])
				if err != nil {
					return err
				}
				return g.print(d, func(w io.Writer) { writeResourceDetail(w, d) })
			})
		},
	}
}

func kvList(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, " ")
}

func opText(op api.Op) string {
	s := op.Name
	if op.Interval != "" {
		s += " interval=" + op.Interval
	}
	if op.Timeout != "" {
		s += " timeout=" + op.Timeout
	}
	if op.OnFail != "" {
		s += " on-fail=" + op.OnFail
	}
	return s
}

func writeResourceDetail(w io.Writer, d api.ResourceDetail) {
	r := d.Config
	fmt.Fprintf(w, "Resource: %s (%s)\n", r.ID, r.Agent)
	if d.Group != "" {
		fmt.Fprintf(w, "  Group: %s\n", d.Group)
	}
	if d.Clone != "" {
		fmt.Fprintf(w, "  Clone: %s\n", d.Clone)
	}
	if len(r.Params) > 0 {
		fmt.Fprintf(w, "  Params: %s\n", kvList(r.Params))
	}
	if len(r.Meta) > 0 {
		fmt.Fprintf(w, "  Meta: %s\n", kvList(r.Meta))
	}
	if len(r.Utilization) > 0 {
		fmt.Fprintf(w, "  Utilization: %s\n", kvList(r.Utilization))
	}
	for i, op := range r.Ops {
		label := "  Operations:"
		if i > 0 {
			label = "             "
		}
		fmt.Fprintf(w, "%s %s\n", label, opText(op))
	}
	fmt.Fprintln(w, "State:")
	for _, in := range d.Instances {
		fmt.Fprintf(w, "  %s  %s\n", in.Instance, stateText(in))
	}
	if len(d.Records) > 0 {
		fmt.Fprintln(w, "Records:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  INSTANCE\tNODE\tSTATE\tFAILS\tLAST OP\tRC\tCHANGED")
		for _, rec := range d.Records {
			changed := "-"
			if !rec.Changed.IsZero() {
				changed = rec.Changed.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%d\t%s\n", rec.Instance, rec.Node, rec.State, rec.FailCount, orDash(rec.LastOp), rec.LastRC, changed)
		}
		tw.Flush()
		for _, rec := range d.Records {
			if rec.Output != "" && rec.State != "started" && rec.State != "stopped" {
				fmt.Fprintf(w, "  %s on %s said: %s\n", rec.Instance, rec.Node, strings.TrimSpace(rec.Output))
			}
		}
	}
	if n := len(d.Constraints.Locations) + len(d.Constraints.Colocations) + len(d.Constraints.Orders); n > 0 {
		fmt.Fprintln(w, "Constraints:")
		writeConstraints(w, d.Constraints, "  ")
	}
}

func newResourceGroupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "Groups: resources kept together and started in order",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "add GROUP ID...",
		Short: "Append resources to a group (created if new); a resource in another group leaves it",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.AddToGroup(ctx, args[0], api.GroupRequest{Resources: args[1:]})
				if err != nil {
					return err
				}
				writeResult(g.stdout, fmt.Sprintf("group %s: added %s", args[0], strings.Join(args[1:], ", ")), res)
				return nil
			})
		},
	})
	return cmd
}

// parseCloneArgs parses `resource clone ID [CLONE-ID] [max=N]`.
func parseCloneArgs(args []string) (string, api.CloneRequest, error) {
	var req api.CloneRequest
	if len(args) == 0 {
		return "", req, errors.New("clone: name the resource or group to clone")
	}
	for _, a := range args[1:] {
		k, v, ok := strings.Cut(a, "=")
		switch {
		case !ok && req.ID == "":
			req.ID = a
		case k == "max" || k == "clone-max":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return "", req, fmt.Errorf("%s=%q: want a number of instances (0 = one per node)", k, v)
			}
			req.Max = n
		default:
			return "", req, fmt.Errorf("clone: %q: want [CLONE-ID] [max=N]", a)
		}
	}
	return args[0], req, nil
}

func newResourceCloneCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "clone ID [CLONE-ID] [max=N]",
		Short: "Run copies of a resource or group: one per node, or N (clone id: ID-clone)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			of, req, err := parseCloneArgs(args)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.CloneResource(ctx, of, req)
				if err != nil {
					return err
				}
				id := req.ID
				if id == "" {
					id = of + "-clone"
				}
				writeResult(g.stdout, fmt.Sprintf("cloned %s as %s", of, id), res)
				return nil
			})
		},
	}
}
