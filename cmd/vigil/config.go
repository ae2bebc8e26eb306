package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "The resource configuration as one YAML document: export, edit, apply",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "export",
		Short: "Print the resource configuration as YAML (vigil config apply reads it back)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				doc, err := c.ExportConfig(ctx)
				if err != nil {
					return err
				}
				return g.print(doc, func(w io.Writer) {
					fmt.Fprintf(w, "# Vigil resource configuration at epoch %d. Edit, then: vigil config apply FILE [--dry-run]\n", doc.Epoch)
					fmt.Fprint(w, doc.YAML)
				})
			})
		},
	}, newConfigApplyCmd(g))
	return cmd
}

func newConfigApplyCmd(g *globals) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Replace the resource configuration with FILE (- for stdin); --dry-run shows the diff and the plan",
		Long: `Replace the whole resource configuration (resources, groups, clones, constraints,
node settings, properties, datastores) with FILE, as 'vigil config export' writes it. The
document is read strictly and validated whole; a refused document changes nothing.

A datastore new in FILE (or given a new path) must be a folder on the node that answers,
which initializes it as 'vigil datastore create' does. A datastore cannot be removed while
a VM in FILE still names it, nor moved while a VM on it is active.

With --dry-run nothing changes: the changes are printed as store keys ("+ key" new,
"- key" removed, "~ key" changed) with the plan the scheduler would make.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			doc, err := readFileArg(args[0])
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.ApplyConfig(ctx, api.ApplyConfigRequest{YAML: string(doc), DryRun: dryRun})
				if err != nil {
					return err
				}
				return g.print(res, func(w io.Writer) { writeApplyResult(w, res) })
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show the changes and the plan; change nothing")
	return cmd
}

func writeApplyResult(w io.Writer, res api.ApplyConfigResult) {
	if len(res.Changes) == 0 {
		fmt.Fprintf(w, "no changes (epoch %d)\n", res.Epoch)
		if !res.DryRun {
			return
		}
	}
	for _, ch := range res.Changes {
		fmt.Fprintln(w, ch)
	}
	if !res.DryRun {
		fmt.Fprintf(w, "applied %d changes (epoch %d)\n", len(res.Changes), res.Epoch)
		return
	}
	fmt.Fprintf(w, "\ndry run at epoch %d: nothing was changed. The scheduler would do:\n", res.Epoch)
	fmt.Fprint(w, indent(res.Plan, "  "))
}

// readFileArg reads a file, or stdin for "-".
func readFileArg(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// indent prefixes every non-empty line of s.
func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			b.WriteString(prefix)
		}
		b.WriteString(l)
	}
	return b.String()
}
