package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/model"
)

func newVMCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Virtual machines (vigil:vm resources)",
	}
	cmd.AddCommand(newVMCreateCmd(g))
	return cmd
}

// vmCreate is what `vigil vm create` was asked.
type vmCreate struct {
	name                    string
	cpus                    int
	memory                  string
	disks                   []string
	size                    string
	existing                bool
	nics                    []string
	machine                 string
	kernel, initrd, appendS string
	stopTimeout             string
	extraArgs               string
	disabled                bool
}

// vmDiskImage is a disk of the VM to create on a datastore.
type vmDiskImage struct {
	datastore, path, format string
}

// imagesOf lists the disks given as DATASTORE:path (absolute paths are
// used as they are, never created), with their format.
func imagesOf(disks []string) ([]vmDiskImage, error) {
	var out []vmDiskImage
	for _, d := range disks {
		if filepath.IsAbs(d) {
			continue
		}
		format := ""
		for _, f := range []string{"raw", "qcow2"} {
			if rest, ok := strings.CutSuffix(d, ":"+f); ok {
				d, format = rest, f
			}
		}
		ds, path, ok := strings.Cut(d, ":")
		if !ok || ds == "" || path == "" {
			return nil, fmt.Errorf("--disk %q: want DATASTORE:path (ds1:vm1.qcow2) or an absolute path", d)
		}
		if format == "" {
			switch strings.ToLower(filepath.Ext(path)) {
			case ".qcow2":
				format = "qcow2"
			case ".raw", ".img":
				format = "raw"
			default:
				return nil, fmt.Errorf("--disk %q: cannot tell the format from the name: end it in .qcow2 or .raw, or add :qcow2 or :raw", d)
			}
		}
		out = append(out, vmDiskImage{datastore: ds, path: path, format: format})
	}
	return out, nil
}

// resource is the vigil:vm resource `vm create` makes: migratable, with
// operation timeouts fit for a VM (the agent's meta-data advises them).
func (v vmCreate) resource() api.Resource {
	params := map[string]string{
		"cpus": fmt.Sprint(v.cpus),
		"disk": strings.Join(v.disks, ","),
	}
	set := func(k, val string) {
		if val != "" {
			params[k] = val
		}
	}
	set("memory", v.memory)
	set("nic", strings.Join(v.nics, ","))
	set("machine", v.machine)
	set("kernel", v.kernel)
	set("initrd", v.initrd)
	set("append", v.appendS)
	set("stop_timeout", v.stopTimeout)
	set("extra_args", v.extraArgs)
	return api.Resource{
		ID:     v.name,
		Agent:  "vigil:vm",
		Params: params,
		Meta:   map[string]string{model.MetaAllowMigrate: "true"},
		Ops: []api.Op{
			{Name: "monitor", Interval: "10s", Timeout: "20s"},
			{Name: "start", Timeout: "60s"},
			{Name: "stop", Timeout: "90s"},
			{Name: "migrate_to", Timeout: "300s"},
			{Name: "migrate_from", Timeout: "60s"},
		},
	}
}

func newVMCreateCmd(g *globals) *cobra.Command {
	v := vmCreate{}
	cmd := &cobra.Command{
		Use:   "create NAME --disk DATASTORE:PATH [--size 10G] [--cpus N] [--memory 1G] [--nic user|bridge:BR|tap:TAP] [--kernel … --initrd … --append …]",
		Short: "Create a VM: its disk image on a datastore and its vigil:vm resource",
		Long: `Create a virtual machine: a qcow2 (or raw) image of --size on the datastore of each
--disk given as DATASTORE:path (by the answering node, which must have the datastore
mounted), then a vigil:vm resource with allow-migrate=true (moves live-migrate it).

The resource is created first, stopped, so that a bad parameter changes nothing; then the
images; then it is enabled (unless --disabled). An image that exists already is refused,
unless --existing (then it is used as it is). An absolute --disk path is used as it is.

  vigil vm create web1 --cpus 2 --memory 1G --disk ds1:web1.qcow2 --size 20G --nic bridge:br0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v.name = args[0]
			if err := model.ValidID(v.name); err != nil {
				return fmt.Errorf("vm %w", err)
			}
			if len(v.disks) == 0 {
				return errors.New("give at least one --disk (DATASTORE:path)")
			}
			images, err := imagesOf(v.disks)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				return v.create(ctx, g, c, images)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&v.cpus, "cpus", 1, "virtual CPUs")
	f.StringVar(&v.memory, "memory", "", "guest memory (512M, 2G; default 128M)")
	f.StringArrayVar(&v.disks, "disk", nil, "disk: DATASTORE:path (created) or an absolute path (used as is); repeat for more disks; the first datastore disk carries the disk lease")
	f.StringVar(&v.size, "size", "10G", "size of each disk image created")
	f.BoolVar(&v.existing, "existing", false, "use disk images that exist already instead of refusing")
	f.StringArrayVar(&v.nics, "nic", nil, "NIC: user, bridge:BRIDGE or tap:TAP; repeat for more (default none)")
	f.StringVar(&v.machine, "machine", "", "QEMU machine type (default q35)")
	f.StringVar(&v.kernel, "kernel", "", "kernel for a direct boot (DATASTORE:path or absolute path)")
	f.StringVar(&v.initrd, "initrd", "", "initrd for a direct boot")
	f.StringVar(&v.appendS, "append", "", "kernel command line for a direct boot")
	f.StringVar(&v.stopTimeout, "stop-timeout", "", "how long a stop waits for the guest to power down before quitting QEMU (default 60s)")
	f.StringVar(&v.extraArgs, "extra-args", "", "extra QEMU arguments (escape hatch)")
	f.BoolVar(&v.disabled, "disabled", false, "create it stopped (vigil resource enable starts it)")
	return cmd
}

// create makes the resource (stopped), the images, then enables it. A
// failure before the images leaves nothing; a failed image removes the
// resource again (images already created are kept and named).
func (v vmCreate) create(ctx context.Context, g *globals, c *api.Client, images []vmDiskImage) error {
	res, err := c.CreateResource(ctx, api.CreateResourceRequest{Resource: v.resource(), Disabled: true})
	if err != nil {
		return fmt.Errorf("create resource %s: %w", v.name, err)
	}
	var made []string
	for _, img := range images {
		out, err := c.CreateImage(ctx, img.datastore, api.CreateImageRequest{Path: img.path, Size: v.size, Format: img.format, Existing: v.existing})
		if err != nil {
			if _, derr := c.DeleteResource(ctx, v.name); derr != nil {
				fmt.Fprintf(g.stderr, "could not remove resource %s again: %v\n", v.name, derr)
			}
			if len(made) > 0 {
				fmt.Fprintf(g.stderr, "images created and kept: %s\n", strings.Join(made, ", "))
			}
			return fmt.Errorf("disk %s:%s: %w", img.datastore, img.path, err)
		}
		if out.Created {
			made = append(made, out.Path)
			fmt.Fprintf(g.stdout, "created image %s (%s, %s) on %s\n", out.Path, img.format, v.size, out.Node)
		} else {
			fmt.Fprintf(g.stdout, "using existing image %s\n", out.Path)
		}
	}
	if !v.disabled {
		if res, err = c.UpdateResource(ctx, v.name, api.UpdateResourceRequest{Meta: map[string]string{model.MetaTargetRole: ""}}); err != nil {
			return fmt.Errorf("enable %s (it was created stopped): %w", v.name, err)
		}
	}
	writeResult(g.stdout, "created vm "+v.name, res)
	return nil
}
