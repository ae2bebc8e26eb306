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

func newDatastoreCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "datastore",
		Short: "Declare, list and delete datastores (shared folders for VM disks)",
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "create NAME PATH",
			Short: "Declare a datastore mounted at PATH on every node",
			Long: `Declare a datastore: a shared folder (NFS, a cluster filesystem) that every node
mounts at PATH, where VM disks live (vigil:vm's disk=NAME:path). The answering node must
have it mounted: it writes Vigil's marker there (naming the cluster and the datastore) so
that no node ever uses an unmounted mountpoint or another cluster's folder. Every node
then checks it every 5 seconds (vigil status, DATASTORES).`,
			Args: cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
					res, err := c.CreateDatastore(ctx, api.CreateDatastoreRequest{Name: args[0], Path: args[1]})
					if err != nil {
						return err
					}
					writeResult(g.stdout, "created datastore "+args[0], res)
					return nil
				})
			},
		},
		&cobra.Command{
			Use:   "list",
			Short: "List the datastores and how every node sees them",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
					ds, err := c.Datastores(ctx)
					if err != nil {
						return err
					}
					return g.print(ds, func(w io.Writer) {
						if len(ds) == 0 {
							fmt.Fprintln(w, "No datastores configured.")
							return
						}
						writeDatastores(w, ds)
					})
				})
			},
		},
		&cobra.Command{
			Use:   "delete NAME",
			Short: "Remove a datastore from the configuration (its files stay; refused while a VM uses it)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
					res, err := c.DeleteDatastore(ctx, args[0])
					if err != nil {
						return err
					}
					writeResult(g.stdout, "deleted datastore "+args[0], res)
					return nil
				})
			},
		},
	)
	return cmd
}

// writeDatastores renders datastores as a table: name, path, and each
// node's verdict ("n1 ok 1.2ms", "n2 FAILED: not mounted").
func writeDatastores(w io.Writer, ds []api.Datastore) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATASTORE\tPATH\tNODES")
	for _, d := range ds {
		var nodes []string
		for _, h := range d.Health {
			if h.OK {
				nodes = append(nodes, fmt.Sprintf("%s ok %s", h.Node, h.Latency.Round(10*time.Microsecond)))
			} else {
				nodes = append(nodes, fmt.Sprintf("%s FAILED: %s", h.Node, h.Error))
			}
		}
		if len(nodes) == 0 {
			nodes = []string{"not checked yet"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Name, d.Path, strings.Join(nodes, "; "))
	}
	tw.Flush()
}
