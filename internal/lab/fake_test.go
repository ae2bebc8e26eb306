package lab_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/lab"
	"github.com/vigil-ha/vigil/internal/model"
)

// fakeEnv makes the test binary act as a small stand-in for vigil, so the
// lab's processes, namespaces and faults can be tested without the real
// agent: `cluster setup` writes real configuration files, `agent` and
// `witness` listen on TCP and UDP on each link, and `status` reports a peer
// link up when a TCP connection to it succeeds from the host's namespace.
const fakeEnv = "VIGIL_LAB_FAKE"

// fakeOptions returns lab options that run the stand-in.
func fakeOptions(t *testing.T, o lab.Options) lab.Options {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.Binary = exe
	o.Env = append(o.Env, fakeEnv+"=1")
	return o
}

// valueFlags are the flags of the real CLI that take a value.
var valueFlags = map[string]bool{
	"--config": true, "--api": true, "--output": true, "-o": true, "--key-file": true,
	"--dir": true, "--node": true, "--witness": true, "--heartbeat": true,
	"--node-timeout": true, "--expected-votes": true, "--data-dir": true,
}

func fakeMain(args []string) int {
	flags := map[string][]string{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		if !hasVal && valueFlags[name] && i+1 < len(args) {
			i++
			val = args[i]
		}
		flags[name] = append(flags[name], val)
	}
	get := func(name string) string {
		if v := flags[name]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	var err error
	switch {
	case len(pos) >= 3 && pos[0] == "cluster" && pos[1] == "setup":
		err = fakeSetup(pos[2], get("--dir"), flags["--node"], flags["--witness"])
	case len(pos) == 1 && (pos[0] == "agent" || pos[0] == "witness"):
		err = fakeAgent(get("--config"))
	case len(pos) == 1 && pos[0] == "status":
		err = fakeStatus(get("--config"), strings.Split(get("--api"), ","))
	default:
		err = fmt.Errorf("fake vigil: unsupported command %q", args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vigil:", err)
		return 1
	}
	return 0
}

func fakeSetup(name, dir string, nodes, witnesses []string) error {
	c := model.Cluster{Name: name}
	add := func(args []string, role model.Role) {
		for _, a := range args {
			n, links, _ := strings.Cut(a, "=")
			c.Nodes = append(c.Nodes, model.Node{Name: n, ID: uint64(len(c.Nodes) + 1), Links: strings.Split(links, ","), Role: role})
		}
	}
	add(nodes, "")
	add(witnesses, model.RoleWitness)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, "cluster.key"), []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		f := &config.File{Cluster: c, Node: n.Name, KeyFile: "cluster.key", DataDir: "data/" + n.Name, Initial: true}
		if err := f.Validate(); err != nil {
			return err
		}
		if err := f.Write(filepath.Join(dir, n.Name+".yaml")); err != nil {
			return err
		}
	}
	return nil
}

func fakeAgent(path string) error {
	f, err := config.Load(path)
	if err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	for _, addr := range f.Self().Links {
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		ul, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				fmt.Fprintln(c, f.Node)
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := ul.ReadFrom(buf)
				if err != nil {
					return
				}
				ul.WriteTo(buf[:n], from)
			}
		}()
		fmt.Fprintf(os.Stderr, "level=INFO msg=\"fake agent listening\" node=%s addr=%s\n", f.Node, addr)
	}
	<-stop
	fmt.Fprintf(os.Stderr, "level=INFO msg=\"fake agent stopping\" node=%s\n", f.Node)
	return nil
}

func fakeStatus(path string, self []string) error {
	f, err := config.Load(path)
	if err != nil {
		return err
	}
	dial := func(addr string) bool {
		c, err := net.DialTimeout("tcp", addr, 400*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	if !slices.ContainsFunc(self, dial) {
		return fmt.Errorf("api: no node answered at %v", self)
	}
	st := api.Status{Cluster: f.Name, Node: f.Node}
	st.Nodes = make([]api.NodeStatus, len(f.Nodes))
	var wg sync.WaitGroup
	for i, n := range f.Nodes {
		ns := api.NodeStatus{Name: n.Name, ID: n.ID, Role: string(n.Role), State: api.NodeLost, Links: make([]api.LinkStatus, len(n.Links))}
		if ns.Role == "" {
			ns.Role = string(model.RoleNode)
		}
		if n.Name == f.Node {
			ns.Self, ns.State = true, api.NodeMember
		}
		for li, addr := range n.Links {
			ns.Links[li] = api.LinkStatus{Index: li, Addr: addr}
		}
		st.Nodes[i] = ns
		for li, addr := range n.Links {
			if ns.Self {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st.Nodes[i].Links[li].Up = dial(addr)
			}()
		}
	}
	wg.Wait()
	st.Quorum.Expected = len(f.Nodes)
	st.Quorum.Needed = len(f.Nodes)/2 + 1
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if slices.ContainsFunc(n.Links, func(l api.LinkStatus) bool { return l.Up }) {
			n.State = api.NodeMember
		}
		if n.State == api.NodeMember {
			st.Quorum.Votes++
		}
	}
	st.Quorum.Quorate = st.Quorum.Votes >= st.Quorum.Needed
	if st.Quorum.Quorate {
		for i, n := range st.Nodes {
			if n.State == api.NodeMember && n.Role == string(model.RoleNode) {
				st.DC = n.Name
				st.Nodes[i].DC = true
				break
			}
		}
	} else {
		st.Quorum.Reason = "fake: no majority"
	}
	return json.NewEncoder(os.Stdout).Encode(st)
}
