package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

func newStatusCmd(g *globals) *cobra.Command {
	var watch bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show nodes, links, quorum, the DC, the configuration epoch and every resource",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			show := func(ctx context.Context) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				return g.print(st, func(w io.Writer) { writeStatus(w, st) })
			}
			if !watch {
				return show(cmd.Context())
			}
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				if g.output == "text" {
					fmt.Fprint(g.stdout, "\033[H\033[2J")
				}
				if err := show(cmd.Context()); err != nil {
					fmt.Fprintln(g.stdout, "error:", err)
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "refresh period with --watch")
	return cmd
}

// writeStatus renders a Status the way crm_mon does: the cluster line, the
// quorum, then one line per node with its links.
func writeStatus(w io.Writer, st api.Status) {
	dc := st.DC
	if dc == "" {
		dc = "none"
	}
	q := "NO QUORUM"
	if st.Quorum.Quorate {
		q = "yes"
	}
	fmt.Fprintf(w, "Cluster: %s (answered by %s)\n", st.Cluster, st.Node)
	fmt.Fprintf(w, "DC: %s  term %d  config epoch %d\n", dc, st.Term, st.Epoch)
	fmt.Fprintf(w, "Quorum: %s (%s)\n", q, st.Quorum.Reason)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tROLE\tRAFT\tPROTECTION\tLINKS")
	for _, n := range st.Nodes {
		name := n.Name
		if n.DC {
			name += " (DC)"
		}
		if n.Self {
			name += " *"
		}
		var links []string
		for _, l := range n.Links {
			if n.Self {
				links = append(links, fmt.Sprintf("%d:%s", l.Index, l.Addr))
				continue
			}
			state := "down"
			if l.Up {
				state = fmt.Sprintf("up %s", l.RTT.Round(10*time.Microsecond))
				if l.Loss > 0 {
					state += fmt.Sprintf(" loss %.0f%%", 100*l.Loss)
				}
			}
			links = append(links, fmt.Sprintf("%d:%s", l.Index, state))
		}
		state := n.State
		if n.Isolation != "" {
			state += ", " + n.Isolation
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, state, n.Role, n.Raft, orDash(n.Protection), strings.Join(links, "  "))
	}
	tw.Flush()
	writeResourceStatus(w, st)
	if len(st.Datastores) > 0 {
		fmt.Fprintln(w)
		writeDatastores(w, st.Datastores)
	}
	writeFenceRequests(w, st.FenceRequests)
	for _, wn := range st.Warnings {
		fmt.Fprintln(w, "WARNING:", wn)
	}
}

// writeResourceStatus renders the resource part of a Status, crm_mon style:
// each instance with its state and node, then failures with fail counts,
// blocked instances with reasons, and tasks in flight.
func writeResourceStatus(w io.Writer, st api.Status) {
	fmt.Fprintln(w)
	if st.ResourceError != "" {
		fmt.Fprintln(w, "Resources: unavailable:", st.ResourceError)
		return
	}
	if len(st.Resources) == 0 {
		fmt.Fprintln(w, "Resources: none configured")
	} else {
		fmt.Fprintln(w, "Resources:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, r := range st.Resources {
			agent := r.Agent
			switch {
			case r.Group != "" && r.Clone != "":
				agent += ", group " + r.Group + ", clone " + r.Clone
			case r.Group != "":
				agent += ", group " + r.Group
			case r.Clone != "":
				agent += ", clone " + r.Clone
			}
			if agent != "" {
				agent = "(" + agent + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.Instance, agent, stateText(r))
		}
		tw.Flush()
	}
	if len(st.Failures) > 0 {
		fmt.Fprintln(w, "\nFailures:")
		for _, f := range st.Failures {
			line := fmt.Sprintf("  %s on %s: %s, fail count %d", f.Instance, f.Node, f.State, f.FailCount)
			if f.LastOp != "" {
				line += fmt.Sprintf(" (last %s rc=%d", f.LastOp, f.LastRC)
				if !f.LastFailure.IsZero() {
					line += " at " + f.LastFailure.Local().Format(time.DateTime)
				}
				line += ")"
			}
			out := strings.TrimSpace(f.Output)
			if f.FailureReason != "" {
				out = strings.TrimSpace(f.FailureReason)
			}
			if out != "" {
				if i := strings.LastIndexByte(out, '\n'); i >= 0 {
					out = out[i+1:]
				}
				line += ": " + out
			}
			fmt.Fprintln(w, line)
		}
	}
	if len(st.Blocked) > 0 {
		fmt.Fprintln(w, "\nBlocked:")
		for _, b := range st.Blocked {
			fmt.Fprintf(w, "  %s: %s\n", b.Instance, b.Reason)
		}
	}
	if len(st.Pending) > 0 {
		fmt.Fprintln(w, "\nPending tasks:")
		for _, p := range st.Pending {
			line := fmt.Sprintf("  %s %s on %s (%s)", p.Action, p.Instance, p.Node, p.ID)
			if p.Reason != "" {
				line += ": " + p.Reason
			}
			fmt.Fprintln(w, line)
		}
	}
}

// stateText says "started on n2", "unknown on n3 (waiting for fencing)",
// "stopped (disabled)".
func stateText(r api.ResourceStatus) string {
	s := r.State
	if r.Node != "" {
		s += " on " + r.Node
	}
	if r.Note != "" {
		s += " (" + r.Note + ")"
	}
	return s
}
