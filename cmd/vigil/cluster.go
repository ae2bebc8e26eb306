package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/pki"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Create a cluster, join or remove nodes",
	}
	cmd.AddCommand(newSetupCmd(g), newTokenCmd(g), newJoinCmd(g), newRemoveNodeCmd(g))
	return cmd
}

// setupOptions are the flags of `vigil cluster setup`.
type setupOptions struct {
	nodes, witnesses  []string
	dir, dataDir      string
	runDir            string
	heartbeat         time.Duration
	nodeTimeout       time.Duration
	twoNode, wfa, lms bool
	expectedVotes     int
	watchdog          string
	watchdogTimeout   time.Duration
	watchdogDevice    string
	watchdogLease     time.Duration
}

func newSetupCmd(g *globals) *cobra.Command {
	var o setupOptions
	cmd := &cobra.Command{
		Use:   "setup NAME --node n1=HOST:PORT[,HOST:PORT] --node n2=... ...",
		Short: "Write each node's configuration and a new cluster key",
		Long: `Write DIR/cluster.key (a new random key) and DIR/<node>.yaml for each node.
Copy <node>.yaml to /etc/vigil/vigil.yaml on that node, and cluster.key beside it
(mode 0600), then start 'vigil agent' on every node.

Each --node gives one HOST:PORT per link; link i of every node must be on the same
network. On each link address a node listens on UDP (heartbeats) and TCP (API and
peer traffic).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSetup(g, args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.nodes, "node", nil, "a node: NAME=HOST:PORT[,HOST:PORT...] (repeat)")
	f.StringArrayVar(&o.witnesses, "witness", nil, "a witness: NAME=HOST:PORT[,...] (votes, runs nothing)")
	f.StringVar(&o.dir, "dir", ".", "folder to write the key and configurations to")
	f.StringVar(&o.dataDir, "data-dir", "data/{node}", "data folder per node; {node} is replaced by the node name; relative to the config file")
	f.StringVar(&o.runDir, "run-dir", "", "volatile state folder per node ({node} replaced; default /run/vigil/CLUSTER-NODE)")
	f.DurationVar(&o.heartbeat, "heartbeat", model.DefaultHeartbeat, "heartbeat period on each link")
	f.DurationVar(&o.nodeTimeout, "node-timeout", model.DefaultNodeTimeout, "silence on all links after which a node is lost")
	f.BoolVar(&o.twoNode, "two-node", false, "two-node cluster: one node keeps quorum alone (only safe with fencing or a witness)")
	f.BoolVar(&o.wfa, "wait-for-all", false, "no quorum after a cold start until all nodes were seen")
	f.BoolVar(&o.lms, "last-man-standing", false, "recompute expected votes as nodes leave")
	f.IntVar(&o.expectedVotes, "expected-votes", 0, "override the expected votes")
	f.StringVar(&o.watchdog, "watchdog", "", "watchdog self-fencing backend: process (a supervisor process; labs, containers) or device (/dev/watchdog)")
	f.DurationVar(&o.watchdogTimeout, "watchdog-timeout", model.DefaultWatchdogTimeout, "the watchdog resets a node not petted for this long")
	f.StringVar(&o.watchdogDevice, "watchdog-device", "", "watchdog device of the device backend (default "+model.DefaultWatchdogDevice+")")
	f.DurationVar(&o.watchdogLease, "watchdog-lease", model.DefaultWatchdogLease, "node lease: at most --node-timeout")
	return cmd
}

// parseNodeArg parses NAME=HOST:PORT[,HOST:PORT].
func parseNodeArg(s string) (string, []string, error) {
	name, addrs, ok := strings.Cut(s, "=")
	if !ok || name == "" || addrs == "" {
		return "", nil, fmt.Errorf("--node %q: want NAME=HOST:PORT[,HOST:PORT]", s)
	}
	return name, strings.Split(addrs, ","), nil
}

func runSetup(g *globals, name string, o setupOptions) error {
	c := model.Cluster{
		Name: name,
		Timing: model.Timing{
			Heartbeat:   model.Duration(o.heartbeat),
			NodeTimeout: model.Duration(o.nodeTimeout),
		},
		Quorum: model.QuorumOptions{
			ExpectedVotes:   o.expectedVotes,
			TwoNode:         o.twoNode,
			LastManStanding: o.lms,
		},
	}
	if o.wfa {
		t := true
		c.Quorum.WaitForAll = &t
	}
	if o.watchdog != "" {
		c.Watchdog = model.WatchdogConfig{
			Backend: o.watchdog,
			Timeout: model.Duration(o.watchdogTimeout),
			Device:  o.watchdogDevice,
			Lease:   model.Duration(o.watchdogLease),
		}
	}
	add := func(args []string, role model.Role) error {
		for _, a := range args {
			n, links, err := parseNodeArg(a)
			if err != nil {
				return err
			}
			c.Nodes = append(c.Nodes, model.Node{Name: n, ID: uint64(len(c.Nodes) + 1), Links: links, Role: role})
		}
		return nil
	}
	if err := add(o.nodes, ""); err != nil {
		return err
	}
	if err := add(o.witnesses, model.RoleWitness); err != nil {
		return err
	}
	if len(o.nodes) == 0 {
		return fmt.Errorf("no nodes: give --node NAME=HOST:PORT at least once")
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", o.dir, err)
	}
	keyPath := filepath.Join(o.dir, "cluster.key")
	if _, err := os.Stat(keyPath); err == nil {
		return fmt.Errorf("%s exists: refusing to overwrite a cluster key (remove it, or use another --dir)", keyPath)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	// Validate every file before writing any, so a bad flag writes nothing.
	var files []*config.File
	for _, n := range c.Nodes {
		f := &config.File{
			Cluster: c,
			Node:    n.Name,
			KeyFile: "cluster.key",
			DataDir: strings.ReplaceAll(o.dataDir, "{node}", n.Name),
			RunDir:  strings.ReplaceAll(o.runDir, "{node}", n.Name),
			Initial: true,
		}
		if err := f.Validate(); err != nil {
			return err
		}
		files = append(files, f)
	}
	if err := pki.WriteKey(keyPath, key); err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(o.dir, f.Node+".yaml")
		if err := f.Write(p); err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "wrote %s\n", p)
	}
	fmt.Fprintf(g.stdout, "wrote %s (keep it secret: it authenticates every node and API call)\n", keyPath)
	if o.twoNode {
		fmt.Fprintln(g.stderr, "WARNING: two_node lets either node keep quorum alone; it is only safe with fencing or a witness")
	}
	return nil
}

// joinToken is what `vigil cluster token` prints: enough for a new node to
// reach the cluster and prove it may join. It contains the cluster key, so it
// is as secret as the key.
type joinToken struct {
	V         int      `json:"v"`
	Cluster   string   `json:"cluster"`
	Key       []byte   `json:"key"`
	Endpoints []string `json:"endpoints"`
}

const tokenPrefix = "vgljoin1."

func newTokenCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "token",
		Short: "Print a join token for a new node (it holds the cluster key: keep it secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := config.Load(g.configFile())
			if err != nil {
				return err
			}
			key, err := pki.LoadKey(f.KeyPath())
			if err != nil {
				return err
			}
			t := joinToken{V: 1, Cluster: f.Name, Key: key}
			for _, n := range f.Nodes {
				t.Endpoints = append(t.Endpoints, n.Links...)
			}
			b, err := json.Marshal(t)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, tokenPrefix+base64.RawURLEncoding.EncodeToString(b))
			return nil
		},
	}
}

func parseToken(s string) (joinToken, error) {
	var t joinToken
	body, ok := strings.CutPrefix(strings.TrimSpace(s), tokenPrefix)
	if !ok {
		return t, fmt.Errorf("join token: does not start with %q", tokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return t, fmt.Errorf("join token: damaged or incomplete (copy the whole output of 'vigil cluster token')")
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return t, fmt.Errorf("join token: damaged or incomplete (copy the whole output of 'vigil cluster token')")
	}
	if t.V != 1 || len(t.Key) != pki.KeySize || len(t.Endpoints) == 0 {
		return t, fmt.Errorf("join token: incomplete or of an unknown version")
	}
	return t, nil
}

func newJoinCmd(g *globals) *cobra.Command {
	var name, dir, dataDir string
	var links []string
	var witness bool
	cmd := &cobra.Command{
		Use:   "join TOKEN --name NAME --link HOST:PORT [--link HOST:PORT]",
		Short: "Admit this machine to a cluster and write its configuration",
		Long: `Ask the cluster (reached through the token's endpoints) to admit this node, then
write DIR/cluster.key and DIR/NAME.yaml. Start the node with 'vigil agent --config
DIR/NAME.yaml'; it receives the cluster state from the others. Get a token with
'vigil cluster token' on any node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := parseToken(args[0])
			if err != nil {
				return err
			}
			if err := model.ValidName(name); err != nil {
				return fmt.Errorf("--name: %w", err)
			}
			if len(links) == 0 {
				return fmt.Errorf("give this node's addresses with --link HOST:PORT (one per link)")
			}
			for _, l := range links {
				if err := model.ValidLink(l); err != nil {
					return err
				}
			}
			keyPath := filepath.Join(dir, "cluster.key")
			cfgPath := filepath.Join(dir, name+".yaml")
			for _, p := range []string{keyPath, cfgPath} {
				if _, err := os.Stat(p); err == nil {
					return fmt.Errorf("%s exists: refusing to overwrite", p)
				}
			}
			ca, err := pki.NewCA(t.Key)
			if err != nil {
				return err
			}
			c := api.NewClient(t.Endpoints, pki.APIToken(t.Key), pki.ClientTLS(ca, nil, ""))
			req := api.JoinRequest{Name: name, Links: links}
			if witness {
				req.Role = string(model.RoleWitness)
			}
			res, err := c.Join(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("join %s: %w", t.Cluster, err)
			}
			var cl model.Cluster
			if err := yaml.Unmarshal(res.Cluster, &cl); err != nil {
				return fmt.Errorf("join: the cluster sent a layout that does not parse: %w", err)
			}
			f := &config.File{Cluster: cl, Node: name, KeyFile: "cluster.key",
				DataDir: strings.ReplaceAll(dataDir, "{node}", name)}
			if err := f.Validate(); err != nil {
				return fmt.Errorf("join: %w", err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := pki.WriteKey(keyPath, t.Key); err != nil {
				return err
			}
			if err := f.Write(cfgPath); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s admitted to %s as node id %d (epoch %d)\nwrote %s and %s\nstart it with: vigil agent --config %s\n",
				name, cl.Name, res.ID, res.Epoch, cfgPath, keyPath, cfgPath)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "this node's name")
	f.StringArrayVar(&links, "link", nil, "this node's HOST:PORT on each link, in link order")
	f.StringVar(&dir, "dir", ".", "folder to write the key and configuration to")
	f.StringVar(&dataDir, "data-dir", "data/{node}", "data folder; relative to the config file")
	f.BoolVar(&witness, "witness", false, "join as a witness (votes, runs nothing)")
	return cmd
}

func newRemoveNodeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove-node NAME",
		Short: "Remove a node from the cluster for good (stop its agent first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.RemoveNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "removed %s (epoch %d)\n", args[0], res.Epoch)
			return nil
		},
	}
}
