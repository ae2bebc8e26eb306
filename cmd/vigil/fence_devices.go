package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

// addFenceCmds adds the device, level and history commands to `vigil fence`.
func addFenceCmds(g *globals, cmd *cobra.Command) {
	cmd.AddCommand(
		newFenceCreateCmd(g),
		newFenceUpdateCmd(g),
		newFenceDeleteCmd(g),
		newFenceListCmd(g),
		newFenceShowCmd(g),
		newFenceLevelCmd(g),
		newFenceHistoryCmd(g),
	)
}

// parseFenceOptions parses the key=value words of `fence create` and
// `fence update`. With allowEmpty, "k=" (remove k) is kept; otherwise it is
// an error. The server maps the pcmk_* keys and timeout, retries and
// monitor_interval to the device's fields, the rest to the agent.
func parseFenceOptions(args []string, allowEmpty bool) (map[string]string, error) {
	var out map[string]string
	for _, a := range args {
		k, v, err := splitKV(a)
		if err != nil {
			return nil, fmt.Errorf("%q: want key=value (pcmk_host_list=n1,n2, pcmk_host_map=n1:plug1;n2:plug2, an agent parameter...)", a)
		}
		if v == "" && !allowEmpty {
			return nil, fmt.Errorf("%q: empty value (leave the key out to leave it unset)", a)
		}
		if err := setOnce(&out, "option", k, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func newFenceCreateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME AGENT [k=v ...] [pcmk_host_list=N1,N2 | pcmk_host_map=N1:PLUG1;N2:PLUG2] [pcmk_delay_base=D] [pcmk_delay_max=D] [timeout=D] [retries=N] [monitor_interval=D]",
		Short: "Create a fence device",
		Long: `Create a fence device. AGENT is a fence agent speaking the fence-agents protocol, by
name (fence_ipmilan, looked up in /usr/sbin) or absolute path. It must be installed on
every node; the answering node checks the parameters against the agent's metadata.

The device must say which nodes it can fence (cluster members):
  pcmk_host_list=n1,n2             the plug is the node's name
  pcmk_host_map="n1:1;n2:2"        node:plug pairs
Vigil's own options:
  pcmk_delay_base=5s               wait before fencing (gives the nodes it fences a head start
                                   in a two-node cluster)
  pcmk_delay_max=10s               plus a random wait of up to this much
  timeout=60s                      bound on each agent invocation (default 60s)
  retries=2                        retries of a failed off (default 2)
  monitor_interval=60s             health check period (default: none)
Every other key=value is a parameter of the agent (written on its stdin).

  vigil fence create ipmi-n1 fence_ipmilan ip=10.0.0.11 username=admin password=secret \
      lanplus=1 pcmk_host_list=n1`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := parseFenceOptions(args[2:], false)
			if err != nil {
				return err
			}
			req := api.CreateFenceDeviceRequest{Name: args[0], Agent: args[1], Options: opts}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.CreateFenceDevice(ctx, req)
				if err != nil {
					return err
				}
				writeResult(g.stdout, "created fence device "+args[0], res)
				return nil
			})
		},
	}
}

func newFenceUpdateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "update NAME k=v ...",
		Short: "Change a fence device's options (k= removes a parameter or resets an option)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := parseFenceOptions(args[1:], true)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.UpdateFenceDevice(ctx, args[0], api.UpdateFenceDeviceRequest{Options: opts})
				if err != nil {
					return err
				}
				writeResult(g.stdout, "updated fence device "+args[0], res)
				return nil
			})
		},
	}
}

func newFenceDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a fence device (refused while a fence level uses it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.DeleteFenceDevice(ctx, args[0])
				if err != nil {
					return err
				}
				writeResult(g.stdout, "deleted fence device "+args[0], res)
				return nil
			})
		},
	}
}

func newFenceListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the fence devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				ds, err := c.FenceDevices(ctx)
				if err != nil {
					return err
				}
				return g.print(ds, func(w io.Writer) { writeFenceDevices(w, ds) })
			})
		},
	}
}

func newFenceShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a fence device's configuration and the levels that use it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				d, err := c.FenceDevice(ctx, args[0])
				if err != nil {
					return err
				}
				return g.print(d, func(w io.Writer) { writeFenceDevice(w, d) })
			})
		},
	}
}

// deviceTargets says which nodes a device fences: "n1, n2" or "n1:1, n2:2".
func deviceTargets(d api.FenceDevice) string {
	parts := slices.Clone(d.HostList)
	var mapped []string
	for n, p := range d.HostMap {
		mapped = append(mapped, n+":"+p)
	}
	sort.Strings(mapped)
	return strings.Join(append(parts, mapped...), ", ")
}

func writeFenceDevices(w io.Writer, ds []api.FenceDevice) {
	if len(ds) == 0 {
		fmt.Fprintln(w, "No fence devices (vigil fence create NAME AGENT ... pcmk_host_list=NODE).")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tAGENT\tNODES\tDELAY\tTIMEOUT\tRETRIES\tLEVELS\tHEALTH")
	for _, d := range ds {
		delay := orDash(d.Delay)
		if d.DelayMax != "" {
			delay = orDefault(d.Delay, "0s") + " +rand " + d.DelayMax
		}
		levels := "-"
		if len(d.Levels) > 0 {
			levels = strings.Join(d.Levels, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Name, d.Agent, orDash(deviceTargets(d)), delay, d.Timeout, d.Retries, levels, orDash(d.Health))
	}
	tw.Flush()
}

// secretParam reports parameters that hold secrets: their values are not
// shown in text output (--output json shows them).
func secretParam(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "passw") || strings.Contains(k, "secret") || strings.Contains(k, "community")
}

func writeFenceDevice(w io.Writer, d api.FenceDevice) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", d.Name)
	fmt.Fprintf(tw, "Agent:\t%s\n", d.Agent)
	if len(d.HostList) > 0 {
		fmt.Fprintf(tw, "Host list:\t%s\n", strings.Join(d.HostList, ","))
	}
	if len(d.HostMap) > 0 {
		var pairs []string
		for n, p := range d.HostMap {
			pairs = append(pairs, n+":"+p)
		}
		sort.Strings(pairs)
		fmt.Fprintf(tw, "Host map:\t%s\n", strings.Join(pairs, ";"))
	}
	keys := make([]string, 0, len(d.Params))
	for k := range d.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var params []string
	for _, k := range keys {
		v := d.Params[k]
		if secretParam(k) {
			v = "(hidden)"
		}
		params = append(params, k+"="+v)
	}
	fmt.Fprintf(tw, "Parameters:\t%s\n", orDash(strings.Join(params, " ")))
	delay := orDefault(d.Delay, "none")
	if d.DelayMax != "" {
		delay = orDefault(d.Delay, "0s") + " + random up to " + d.DelayMax
	}
	fmt.Fprintf(tw, "Delay:\t%s\n", delay)
	fmt.Fprintf(tw, "Timeout:\t%s\n", d.Timeout)
	fmt.Fprintf(tw, "Retries:\t%d\n", d.Retries)
	fmt.Fprintf(tw, "Monitor:\t%s\n", orDefault(d.MonitorInterval, "never"))
	fmt.Fprintf(tw, "Used by:\t%s\n", orDefault(strings.Join(d.Levels, ", "), "no level (without levels, a node is fenced by every device that can fence it, in name order)"))
	tw.Flush()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// --- levels ---

// parseFenceLevel reads a level number, 1 to 9.
func parseFenceLevel(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > api.MaxFenceLevel {
		return 0, fmt.Errorf("level %q: want a number from 1 (tried first) to %d", s, api.MaxFenceLevel)
	}
	return n, nil
}

// parseLevelAdd reads `NODE LEVEL DEVICE[,DEVICE...] [DEVICE...]`.
func parseLevelAdd(args []string) (node string, level int, devices []string, err error) {
	if len(args) < 3 {
		return "", 0, nil, fmt.Errorf("want NODE LEVEL DEVICE[,DEVICE...], e.g. fence level add n1 1 ipmi-n1")
	}
	node = args[0]
	if level, err = parseFenceLevel(args[1]); err != nil {
		if _, e := parseFenceLevel(args[0]); e == nil {
			err = fmt.Errorf("%w: the node comes first: fence level add NODE LEVEL DEVICE[,DEVICE...]", err)
		}
		return "", 0, nil, err
	}
	for _, a := range args[2:] {
		for _, d := range strings.Split(a, ",") {
			d = strings.TrimSpace(d)
			if d == "" {
				return "", 0, nil, fmt.Errorf("%q: empty device name", a)
			}
			if slices.Contains(devices, d) {
				return "", 0, nil, fmt.Errorf("device %s given twice", d)
			}
			devices = append(devices, d)
		}
	}
	return node, level, devices, nil
}

func newFenceLevelCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "level",
		Short: "Fencing topology: which devices fence a node, in which order",
		Long: `A node's fence levels are tried in order: level 1 first, level 2 if it fails, and
so on. Every device of a level must succeed for the level to succeed (say two PDUs
feeding one server). A node without levels is fenced by every device that can fence it,
one per level, in name order.`,
	}
	var replace bool
	add := &cobra.Command{
		Use:   "add NODE LEVEL DEVICE[,DEVICE...]",
		Short: "Add a fence level for NODE (LEVEL 1 to 9; every device of a level must succeed)",
		Args:  cobra.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			node, level, devices, err := parseLevelAdd(args)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.SetFenceLevel(ctx, node, level, api.FenceLevelRequest{Devices: devices, Replace: replace})
				if err != nil {
					return err
				}
				writeResult(g.stdout, fmt.Sprintf("level %d of %s: %s", level, node, strings.Join(devices, " + ")), res)
				return nil
			})
		},
	}
	add.Flags().BoolVar(&replace, "replace", false, "replace the level if it exists with other devices")
	remove := &cobra.Command{
		Use:   "remove NODE [LEVEL]",
		Short: "Remove one fence level of NODE (the later ones move up), or all of them",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			level := 0
			what := "removed every fence level of " + args[0]
			if len(args) == 2 {
				var err error
				if level, err = parseFenceLevel(args[1]); err != nil {
					return err
				}
				what = fmt.Sprintf("removed level %d of %s (the levels after it move up one)", level, args[0])
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.RemoveFenceLevel(ctx, args[0], level)
				if err != nil {
					return err
				}
				writeResult(g.stdout, what, res)
				return nil
			})
		},
	}
	list := &cobra.Command{
		Use:   "list [NODE]",
		Short: "List the fence levels of every node (or of NODE)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := ""
			if len(args) == 1 {
				node = args[0]
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				ls, err := c.FenceLevels(ctx, node)
				if err != nil {
					return err
				}
				return g.print(ls, func(w io.Writer) { writeFenceLevels(w, ls) })
			})
		},
	}
	cmd.AddCommand(add, remove, list)
	return cmd
}

func writeFenceLevels(w io.Writer, ls []api.FenceLevel) {
	if len(ls) == 0 {
		fmt.Fprintln(w, "No fence levels, and no device can fence any node.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tLEVEL\tDEVICES")
	for _, l := range ls {
		note := ""
		if l.Default {
			note = "\t(default: no levels configured)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s%s\n", l.Node, l.Level, strings.Join(l.Devices, " + "), note)
	}
	tw.Flush()
}
