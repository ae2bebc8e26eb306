package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/agent"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/pki"
	"github.com/vigil-ha/vigil/internal/watchdog"
)

func newAgentCmd(g *globals) *cobra.Command {
	var dev bool
	var devAddr string
	cmd := &cobra.Command{
		Use:   "agent [--config FILE | -dev]",
		Short: "Run this node's agent",
		Long: `Run the node agent in the foreground. With -dev, run a one-node cluster on
built-in defaults with its data in a temporary folder that is removed on exit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dev {
				return runDev(g, cmd, devAddr)
			}
			f, err := config.Load(g.configFile())
			if err != nil {
				return err
			}
			if f.Self().IsWitness() {
				return fmt.Errorf("node %s is a witness: run 'vigil witness' on it", f.Node)
			}
			return agent.Run(cmd.Context(), f, newLogger(g, f.LogLevel))
		},
	}
	cmd.Flags().BoolVar(&dev, "dev", false, "run a one-node cluster on built-in defaults, data in a temporary folder")
	cmd.Flags().StringVar(&devAddr, "dev-addr", "127.0.0.1:7946", "with -dev: the node's address")
	return cmd
}

// newWatchdogSupervisorCmd is the process watchdog backend's supervisor,
// started by the agent itself (watchdog.StartProcess): hidden, with its
// own flag parsing, and its exit code is the process's.
func newWatchdogSupervisorCmd() *cobra.Command {
	return &cobra.Command{
		Use:                watchdog.SupervisorCommand + " --timeout=DURATION --target=PGID",
		Short:              "Kill a process group that stops petting (started by the agent)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			os.Exit(watchdog.SupervisorMain(args))
			return nil
		},
	}
}

func newWitnessCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "witness [--config FILE]",
		Short: "Run a witness: it votes (quorum and Raft) but runs no resources",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := config.Load(g.configFile())
			if err != nil {
				return err
			}
			if !f.Self().IsWitness() {
				return fmt.Errorf("node %s is not configured as a witness (role: witness)", f.Node)
			}
			return agent.Run(cmd.Context(), f, newLogger(g, f.LogLevel))
		},
	}
}

// runDev writes a one-node configuration into a temporary folder and runs it.
func runDev(g *globals, cmd *cobra.Command, addr string) error {
	dir, err := os.MkdirTemp("", "vigil-dev-")
	if err != nil {
		return fmt.Errorf("dev: temporary folder: %w", err)
	}
	defer os.RemoveAll(dir)
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	if err := pki.WriteKey(filepath.Join(dir, "cluster.key"), key); err != nil {
		return err
	}
	f := &config.File{
		Cluster: model.Cluster{
			Name:  "dev",
			Nodes: []model.Node{{Name: "dev1", ID: 1, Links: []string{addr}}},
		},
		Node:    "dev1",
		KeyFile: "cluster.key",
		DataDir: "data",
		Initial: true,
	}
	path := filepath.Join(dir, "vigil.yaml")
	if err := f.Write(path); err != nil {
		return err
	}
	if f, err = config.Load(path); err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "Vigil dev agent: one-node cluster %q on %s, data in %s (removed on exit)\n", f.Name, addr, dir)
	fmt.Fprintf(g.stderr, "In another shell:  export VIGIL_CONFIG=%s; vigil status\n", path)
	return agent.Run(cmd.Context(), f, newLogger(g, "info"))
}

func newLogger(g *globals, level string) *slog.Logger {
	var l slog.Level
	switch level {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: l}))
}
