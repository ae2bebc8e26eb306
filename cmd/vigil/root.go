package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/pki"
)

// globals are the flags every command shares.
type globals struct {
	configPath string
	apiAddrs   []string
	keyFile    string
	output     string
	stdout     io.Writer
	stderr     io.Writer
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "vigil",
		Short:         "Vigil keeps virtual machines, virtual IPs and services running when hosts fail",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch g.output {
			case "text", "json":
				return nil
			}
			return fmt.Errorf("--output %q: want text or json", g.output)
		},
	}
	root.SetArgs(normalizeArgs(os.Args[1:]))
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "node configuration file (default $VIGIL_CONFIG or "+config.DefaultPath+")")
	pf.StringSliceVar(&g.apiAddrs, "api", nil, "API endpoints host:port to use instead of the config's (comma-separated; default $VIGIL_API)")
	pf.StringVar(&g.keyFile, "key-file", "", "cluster key file, with --api (default $VIGIL_KEY_FILE)")
	pf.StringVarP(&g.output, "output", "o", "text", "output format of read commands: text or json")

	root.AddCommand(
		newAgentCmd(g),
		newWitnessCmd(g),
		newStatusCmd(g),
		newClusterCmd(g),
		newPropertyCmd(g),
		newResourceCmd(g),
		newConstraintCmd(g),
		newNodeCmd(g),
		newConfigCmd(g),
		newSimulateCmd(g),
		newExplainCmd(g),
		newFenceCmd(g),
		newDatastoreCmd(g),
		newVMCmd(g),
		newVersionCmd(g),
		newDemoCmd(g),
		newWatchdogSupervisorCmd(),
	)
	return root
}

// configFile returns the path of the node configuration to use.
func (g *globals) configFile() string {
	if g.configPath != "" {
		return g.configPath
	}
	if p := os.Getenv("VIGIL_CONFIG"); p != "" {
		return p
	}
	return config.DefaultPath
}

// client builds an API client: from --api and --key-file when given, else
// from the node configuration (this node's links first, then the others', so
// the CLI still works when the local agent is down).
func (g *globals) client() (*api.Client, error) {
	addrs := g.apiAddrs
	if len(addrs) == 0 {
		if env := os.Getenv("VIGIL_API"); env != "" {
			addrs = strings.Split(env, ",")
		}
	}
	keyPath := g.keyFile
	if keyPath == "" {
		keyPath = os.Getenv("VIGIL_KEY_FILE")
	}
	if len(addrs) == 0 || keyPath == "" {
		f, err := config.Load(g.configFile())
		if err != nil {
			return nil, fmt.Errorf("%w (give --config, or --api with --key-file)", err)
		}
		if len(addrs) == 0 {
			addrs = append(addrs, f.Self().Links...)
			for _, n := range f.Nodes {
				if n.Name != f.Node {
					addrs = append(addrs, n.Links...)
				}
			}
		}
		if keyPath == "" {
			keyPath = f.KeyPath()
		}
	}
	key, err := pki.LoadKey(keyPath)
	if err != nil {
		return nil, err
	}
	ca, err := pki.NewCA(key)
	if err != nil {
		return nil, fmt.Errorf("derive cluster CA: %w", err)
	}
	return api.NewClient(addrs, pki.APIToken(key), pki.ClientTLS(ca, nil, "")), nil
}

// print writes v as JSON with --output json, else calls text.
func (g *globals) print(v any, text func(w io.Writer)) error {
	if g.output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(g.stdout)
	return nil
}

// splitKV parses "key=value".
func splitKV(s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("%q: want key=value", s)
	}
	return k, v, nil
}

var errUsage = errors.New("usage")
