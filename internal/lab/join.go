package lab

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// AddHost registers a node that is not in the lab's cluster layout, for
// tests of `vigil cluster join`: it gets fresh loopback addresses (one per
// link) and a folder of its own, Dir()/join-<name>, where `vigil cluster
// join --dir` is to write <name>.yaml and cluster.key (see Join). Once that
// file exists, Start, Stop, Kill, CLI, Status, the logs and the cleanup work
// on the host as on any other; Running and WaitFormed include it while it
// runs. Witness says whether it is to run as `vigil witness`.
//
// Loopback labs only. Unlike the rest of the lab, AddHost changes the host
// list: call it from the test's goroutine while no other goroutine uses the
// lab.
func (l *Lab) AddHost(name string, witness bool) *NodeProc {
	l.t.Helper()
	if l.opts.Netns {
		l.t.Fatalf("lab: AddHost %s: only loopback labs can add hosts", name)
	}
	if _, ok := l.byName[name]; ok {
		l.t.Fatalf("lab: AddHost %s: the lab has a host of that name", name)
	}
	ports, err := freePorts(l.opts.Links)
	if err != nil {
		l.t.Fatalf("lab: AddHost %s: %v", name, err)
	}
	dir := filepath.Join(l.dir, "join-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatalf("lab: AddHost %s: %v", name, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p := &NodeProc{
		Index:   len(l.hosts) + 1,
		Name:    name,
		Witness: witness,
		Config:  filepath.Join(dir, name+".yaml"),
		Log:     filepath.Join(l.dir, "logs", name+".log"),
	}
	for _, port := range ports {
		p.Addrs = append(p.Addrs, "127.0.0.1:"+strconv.Itoa(port))
	}
	l.hosts = append(l.hosts, p)
	l.byName[name] = p
	return p
}

// JoinDir returns the folder AddHost gave host name (the --dir of its join).
func (l *Lab) JoinDir(name string) string {
	return filepath.Dir(l.Node(name).Config)
}

// Token returns the join token `vigil cluster token` prints on host via.
func (l *Lab) Token(ctx context.Context, via string) (string, error) {
	out, err := l.CLI(ctx, via, "cluster", "token")
	return strings.TrimSpace(out), err
}

// Join admits host name (made with AddHost) to the cluster: it takes a
// token from host via, then runs `vigil cluster join TOKEN --name NAME
// --link ADDR... --dir JoinDir(name) [extra...]` on name, and returns what
// the join printed. A host made with witness set joins with --witness.
func (l *Lab) Join(via, name string, extra ...string) (string, error) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Scale(time.Minute))
	defer cancel()
	tok, err := l.Token(ctx, via)
	if err != nil {
		return "", err
	}
	p := l.Node(name)
	args := []string{"cluster", "join", tok, "--name", name, "--dir", l.JoinDir(name)}
	for _, a := range p.Addrs {
		args = append(args, "--link", a)
	}
	if p.Witness {
		args = append(args, "--witness")
	}
	args = append(args, extra...)
	return l.Exec(ctx, name, args...)
}
