package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

// fenceNodeFlags are the flags of `vigil fence NODE`.
type fenceNodeFlags struct {
	reason  string
	yes     bool
	wait    bool
	timeout time.Duration
}

// defaultFenceWait covers the DC's bound on one fence (5 minutes: every
// level, delays and retries) and some.
const defaultFenceWait = 6 * time.Minute

// fencePoll is how often --wait reads the history.
const fencePoll = 500 * time.Millisecond

// newFenceNodeCmd is `vigil fence`: with a NODE, a manual fence; its
// subcommands manage devices, levels and the history.
func newFenceNodeCmd(g *globals) *cobra.Command {
	var f fenceNodeFlags
	cmd := &cobra.Command{
		Use:   "fence [NODE --yes [--reason TEXT] [--wait]]",
		Short: "Fencing: fence devices, levels, history; fence a node; confirm a node down",
		Long: `Fencing puts a lost node out of action for certain before what it ran starts elsewhere.

With NODE: ask the DC to fence NODE now, through its fence levels. This powers NODE off,
even if it is running. The request is carried out by the DC and recorded in the history
(vigil fence history NODE); --wait waits for the outcome.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				return fenceNode(ctx, g, c, args[0], f)
			})
		},
	}
	cmd.Flags().StringVar(&f.reason, "reason", "", "why (recorded in the fencing history)")
	cmd.Flags().BoolVar(&f.yes, "yes", false, "fence: I know this powers the node off")
	cmd.Flags().BoolVar(&f.wait, "wait", false, "wait for the outcome and print it (exit status 1 if fencing failed)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", defaultFenceWait, "how long --wait waits")
	return cmd
}

// fenceNode runs `vigil fence NODE`.
func fenceNode(ctx context.Context, g *globals, c *api.Client, node string, f fenceNodeFlags) error {
	if !f.yes {
		// Say whether NODE exists first: `vigil fence lsit` is a typo, not
		// a node to power off.
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		var names []string
		for _, n := range st.Nodes {
			names = append(names, n.Name)
		}
		if !slices.Contains(names, node) {
			return fmt.Errorf("unknown node %q (nodes: %s; commands: confirm, create, update, delete, list, show, level, history)", node, strings.Join(names, ", "))
		}
		fmt.Fprintf(g.stderr, "WARNING: this asks the DC to power %s off now, even if it is running: everything on it stops.\n", node)
		return errors.New("not fenced: nothing changed; re-run with --yes to fence " + node)
	}
	// The newest event for NODE before the request: --wait waits for a
	// newer one (event IDs sort by time; comparing IDs taken from the
	// same history needs no clock agreement between nodes).
	var before string
	if f.wait {
		h, err := c.FenceHistory(ctx, node)
		if err != nil {
			return err
		}
		before = newestEvent(h, node, "").ID
	}
	res, err := c.RequestFence(ctx, node, api.FenceNodeRequest{Reason: f.reason})
	if err != nil {
		return err
	}
	if !f.wait {
		return g.print(res, func(w io.Writer) { writeFenceQueued(w, node, res) })
	}
	if g.output == "text" {
		writeFenceQueued(g.stdout, node, res)
		fmt.Fprintf(g.stdout, "Waiting for the outcome (up to %s)...\n", f.timeout)
	}
	ev, err := waitFenceEvent(ctx, c, node, before, f.timeout)
	if err != nil {
		return err
	}
	if err := g.print(ev, func(w io.Writer) { writeFenceEvent(w, ev) }); err != nil {
		return err
	}
	if !ev.OK {
		return fmt.Errorf("fencing %s failed: %s", node, ev.Error)
	}
	return nil
}

func writeFenceQueued(w io.Writer, node string, res api.FenceNodeResult) {
	verb := "queued"
	if res.Replaced {
		verb = "queued (it replaces an earlier request)"
	}
	fmt.Fprintf(w, "Fence request for %s %s (by %s).\n", node, verb, res.Request.By)
	if len(res.Plan) > 0 {
		dc := res.DC
		if dc == "" {
			dc = "the DC"
		}
		fmt.Fprintf(w, "%s will try: %s\n", dc, strings.Join(res.Plan, ", "))
	}
	fmt.Fprintf(w, "Follow it with: vigil fence history %s\n", node)
}

// newestEvent returns the newest event for node whose ID is after after.
func newestEvent(h api.FenceHistory, node, after string) api.FenceEvent {
	var out api.FenceEvent
	for _, e := range h.Events {
		if e.Target == node && e.ID > after && e.ID > out.ID {
			out = e
		}
	}
	return out
}

// waitFenceEvent polls the history until an event for node newer than
// before appears.
func waitFenceEvent(ctx context.Context, c *api.Client, node, before string, timeout time.Duration) (api.FenceEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(fencePoll)
	defer t.Stop()
	for {
		h, err := c.FenceHistory(ctx, node)
		switch {
		case err == nil:
			if e := newestEvent(h, node, before); e.ID != "" {
				return e, nil
			}
		case ctx.Err() != nil:
		case api.IsCode(err, api.CodeUnauthorized):
			return api.FenceEvent{}, err
		}
		select {
		case <-ctx.Done():
			return api.FenceEvent{}, fmt.Errorf("no outcome for %s within %s: the request may still be carried out; see vigil fence history %s", node, timeout, node)
		case <-t.C:
		}
	}
}

func writeFenceEvent(w io.Writer, e api.FenceEvent) {
	when := e.Started.Local().Format(time.DateTime)
	if e.OK {
		how := e.How
		if e.How == "device" {
			how = fmt.Sprintf("level %d (%s)", e.Level, strings.Join(e.Devices, "+"))
		}
		fmt.Fprintf(w, "%s fenced at %s by %s, confirmed: %s, in %s.\n", e.Target, when, how, e.Confirmed, e.Duration.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "%s NOT fenced (attempt at %s, %s): %s\n", e.Target, when, e.Duration.Round(time.Millisecond), e.Error)
	}
	for _, a := range e.Attempts {
		fmt.Fprintln(w, "  "+a)
	}
}

func newFenceHistoryCmd(g *globals) *cobra.Command {
	var attempts bool
	cmd := &cobra.Command{
		Use:   "history [NODE]",
		Short: "Show the fencing history (every node, or NODE) and the requests in flight",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := ""
			if len(args) == 1 {
				node = args[0]
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				h, err := c.FenceHistory(ctx, node)
				if err != nil {
					return err
				}
				return g.print(h, func(w io.Writer) { writeFenceHistory(w, h, attempts) })
			})
		},
	}
	cmd.Flags().BoolVar(&attempts, "attempts", false, "list every agent invocation of each event")
	return cmd
}

// writeFenceHistory renders the history as a table, oldest first, then the
// requests in flight.
func writeFenceHistory(w io.Writer, h api.FenceHistory, attempts bool) {
	if len(h.Events) == 0 {
		fmt.Fprintln(w, "No fencing recorded.")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tTARGET\tHOW\tOK\tLEVEL\tDEVICES\tCONFIRMED\tDURATION\tBY\tREASON/ERROR")
		for _, e := range h.Events {
			ok, level := "yes", "-"
			if !e.OK {
				ok = "NO"
			}
			if e.Level > 0 {
				level = fmt.Sprint(e.Level)
			}
			why := strings.TrimSuffix(e.Reason, ": ") // "requested: " with no reason given
			if e.Error != "" {
				why = strings.TrimPrefix(why+"; error: "+e.Error, "; ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
				e.Started.Local().Format(time.DateTime), e.Target, e.How, ok, level, orDash(strings.Join(e.Devices, "+")),
				orDash(e.Confirmed), e.Duration.Round(time.Millisecond), orDash(e.By), orDash(why))
			if attempts {
				for _, a := range e.Attempts {
					fmt.Fprintf(tw, "\t\t\t\t\t\t\t\t\t  %s\n", a)
				}
			}
		}
		tw.Flush()
	}
	writeFenceRequests(w, h.Requests)
}

// writeFenceRequests lists the fence requests in flight.
func writeFenceRequests(w io.Writer, rs []api.FenceRequest) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nFence requests in flight:")
	for _, r := range rs {
		line := fmt.Sprintf("  %s: asked by %s at %s", r.Target, r.By, r.At.Local().Format(time.DateTime))
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		fmt.Fprintln(w, line)
	}
}
