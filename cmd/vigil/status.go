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
		Short: "Show nodes, links, quorum, the DC and the configuration epoch",
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
	fmt.Fprintln(tw, "NODE\tSTATE\tROLE\tRAFT\tLINKS")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, n.State, n.Role, n.Raft, strings.Join(links, "  "))
	}
	tw.Flush()
	for _, wn := range st.Warnings {
		fmt.Fprintln(w, "WARNING:", wn)
	}
}
