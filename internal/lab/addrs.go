package lab

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Virtual IPs in the ground truth. A vigil:ip instance is active where its
// address is configured: an address answers for whichever namespace holds
// it, whether or not that node's agent runs (a hung node still answers; a
// powered-off one holds none, see dropForeignAddrs). TrackAddress makes
// Truth, ActiveOn and WatchNeverTwice read the namespaces' addresses for
// an instance instead of the agents' state files.

// addrTruth is the lab's tracked addresses and its netlink handles.
type addrTruth struct {
	mu      sync.Mutex
	addrs   map[string]netip.Addr      // instance → address
	handles map[string]*netlink.Handle // namespace → handle
}

// TrackAddress says that instance id is a virtual IP (vigil:ip) with
// address addr (no prefix). Netns labs only.
func (l *Lab) TrackAddress(id string, addr netip.Addr) {
	l.t.Helper()
	l.needNetns("TrackAddress")
	l.addrs.mu.Lock()
	defer l.addrs.mu.Unlock()
	if l.addrs.addrs == nil {
		l.addrs.addrs = map[string]netip.Addr{}
	}
	l.addrs.addrs[id] = addr
}

// trackedAddr returns the address of a tracked instance.
func (l *Lab) trackedAddr(id string) (netip.Addr, bool) {
	l.addrs.mu.Lock()
	defer l.addrs.mu.Unlock()
	a, ok := l.addrs.addrs[id]
	return a, ok
}

// handle returns a netlink handle in namespace ns (cached for the lab).
func (l *Lab) handle(ns string) (*netlink.Handle, error) {
	l.addrs.mu.Lock()
	defer l.addrs.mu.Unlock()
	if h, ok := l.addrs.handles[ns]; ok {
		return h, nil
	}
	nh, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer nh.Close()
	h, err := netlink.NewHandleAt(nh)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns, err)
	}
	if l.addrs.handles == nil {
		l.addrs.handles = map[string]*netlink.Handle{}
	}
	l.addrs.handles[ns] = h
	return h, nil
}

// closeHandles releases the cached netlink handles (lab cleanup).
func (l *Lab) closeHandles() {
	l.addrs.mu.Lock()
	defer l.addrs.mu.Unlock()
	for ns, h := range l.addrs.handles {
		h.Close()
		delete(l.addrs.handles, ns)
	}
}

// AddrHolders returns the nodes whose namespace holds addr, sorted.
func (l *Lab) AddrHolders(addr netip.Addr) ([]string, error) {
	var out []string
	for _, p := range l.hosts {
		if p.Witness || p.Netns == "" {
			continue
		}
		has, err := l.holds(p, addr)
		if err != nil {
			return nil, err
		}
		if has {
			out = append(out, p.Name)
		}
	}
	return out, nil
}

func (l *Lab) holds(p *NodeProc, addr netip.Addr) (bool, error) {
	h, err := l.handle(p.Netns)
	if err != nil {
		return false, err
	}
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	list, err := h.AddrList(nil, family)
	if err != nil {
		return false, fmt.Errorf("addresses of %s: %w", p.Name, err)
	}
	for _, a := range list {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == addr {
			return true, nil
		}
	}
	return false, nil
}

// Client is a plain host on link 0's bridge, with no Vigil on it: the
// client of a clustered service in tests.
type Client struct {
	Name  string
	Netns string
	// Addr is its address on link 0 (198.18.0.<k>/24).
	Addr netip.Addr
	// MAC is its interface's hardware address.
	MAC net.HardwareAddr
	// Iface is its interface (in its namespace).
	Iface string
}

// AddClient creates a client host: a namespace with a veth into link 0's
// bridge, address 198.18.0.<200+n>/24 (n counts clients from 0) and an
// IPv6 ULA fd00:198:18::<200+n>/64 without duplicate-address detection.
// It is deleted with the lab.
func (l *Lab) AddClient(name string) *Client {
	l.t.Helper()
	l.needNetns("AddClient")
	l.mu.Lock()
	k := 200 + len(l.clients)
	c := &Client{Name: name, Netns: l.nsName(name), Iface: "c0", Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(k)})}
	l.clients = append(l.clients, c)
	l.mu.Unlock()
	hubEnd := fmt.Sprintf("hc%d", k)
	for _, argv := range [][]string{
		{"ip", "netns", "add", c.Netns},
		{"ip", "-n", l.hubNS(), "link", "add", hubEnd, "type", "veth", "peer", "name", c.Iface, "netns", c.Netns},
		{"ip", "-n", l.hubNS(), "link", "set", hubEnd, "master", "br0", "up"},
		{"ip", "-n", c.Netns, "link", "set", "lo", "up"},
		{"ip", "-n", c.Netns, "addr", "add", c.Addr.String() + "/24", "dev", c.Iface},
		{"ip", "-n", c.Netns, "addr", "add", fmt.Sprintf("fd00:198:18::%d/64", k), "dev", c.Iface, "nodad"},
		{"ip", "-n", c.Netns, "link", "set", c.Iface, "up"},
	} {
		if err := run("", argv...); err != nil {
			l.t.Fatalf("lab: add client %s: %v", name, err)
		}
	}
	h, err := l.handle(c.Netns)
	if err != nil {
		l.t.Fatalf("lab: client %s: %v", name, err)
	}
	link, err := h.LinkByName(c.Iface)
	if err != nil {
		l.t.Fatalf("lab: client %s: %v", name, err)
	}
	c.MAC = link.Attrs().HardwareAddr
	return c
}

// InNetns runs fn on an OS thread switched into namespace ns: sockets fn
// opens belong to ns. fn must not start goroutines that open sockets.
//
// NB: the thread is switched back and unlocked afterwards rather than left
// to die locked: the lab starts agents with Pdeathsig, which fires when the
// forking *thread* exits, so a discarded thread could kill every agent that
// happened to be forked from it.
func InNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: %w", ns, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and is discarded with the goroutine
		errc <- err
	}()
	return <-errc
}

// Neighbour returns the client's neighbour-table entry for ip: its
// link-layer address ("" if none) and state ("REACHABLE", "STALE", …).
func (l *Lab) Neighbour(c *Client, ip netip.Addr) (mac, state string) {
	l.t.Helper()
	h, err := l.handle(c.Netns)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	list, err := h.NeighList(0, family)
	if err != nil {
		l.t.Fatalf("lab: neighbours of %s: %v", c.Name, err)
	}
	for _, n := range list {
		if got, ok := netip.AddrFromSlice(n.IP); ok && got.Unmap() == ip {
			return n.HardwareAddr.String(), neighState(n.State)
		}
	}
	return "", ""
}

func neighState(s int) string {
	names := map[int]string{
		netlink.NUD_INCOMPLETE: "INCOMPLETE", netlink.NUD_REACHABLE: "REACHABLE",
		netlink.NUD_STALE: "STALE", netlink.NUD_DELAY: "DELAY", netlink.NUD_PROBE: "PROBE",
		netlink.NUD_FAILED: "FAILED", netlink.NUD_NOARP: "NOARP", netlink.NUD_PERMANENT: "PERMANENT",
	}
	var out []string
	for bit, name := range names {
		if s&bit != 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "|")
}

// MAC returns the hardware address of a node's interface on link i.
func (l *Lab) MAC(name string, link int) string {
	l.t.Helper()
	p := l.Node(name)
	h, err := l.handle(p.Netns)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	lk, err := h.LinkByName(fmt.Sprintf("l%d", link))
	if err != nil {
		l.t.Fatalf("lab: link %d of %s: %v", link, name, err)
	}
	return lk.Attrs().HardwareAddr.String()
}

// Get makes one HTTP/1.0 GET / to ap from client c's namespace and returns
// the response, or an error if it did not complete within timeout.
func (c *Client) Get(ap netip.AddrPort, timeout time.Duration) (string, error) {
	var body []byte
	err := InNetns(c.Netns, func() error {
		conn, err := net.DialTimeout("tcp", ap.String(), timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(timeout))
		if _, err := conn.Write([]byte("GET / HTTP/1.0\r\nHost: vip\r\n\r\n")); err != nil {
			return err
		}
		body, err = io.ReadAll(conn)
		return err
	})
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(string(body), "HTTP/1.") || !strings.Contains(strings.SplitN(string(body), "\r\n", 2)[0], " 200") {
		return string(body), fmt.Errorf("GET %s: unexpected response %.60q", ap, body)
	}
	return string(body), nil
}

// RunIn runs a command inside namespace ns (a lab host's or client's).
func RunIn(ns string, argv ...string) error {
	return run("", append([]string{"ip", "netns", "exec", ns}, argv...)...)
}
