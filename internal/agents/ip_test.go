package agents

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// The tests' addresses are in 198.18.0.0/15 and 2001:2::/48 (benchmarking
// ranges), inside network namespaces the tests create and close.
const (
	ipNodeIf   = "vip0"
	ipClientIf = "cl0"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("vigil:ip tests need root (they create network namespaces and veth pairs)")
	}
}

// inNS runs f on a thread locked into ns. The thread is never unlocked, so
// it ends with the goroutine and never returns to the pool in ns.
func inNS(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		f()
	}()
	<-done
	if t.Failed() {
		t.FailNow()
	}
}

// newNS creates an anonymous network namespace, closed at cleanup (which
// destroys it and its interfaces).
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread dies with the goroutine
		ns, err = netns.New()
	}()
	<-done
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// ipLab is a node namespace and a client namespace joined by a veth pair
// (vip0 in the node, cl0 in the client).
type ipLab struct {
	node, client       netns.NsHandle
	nodeMAC, clientMAC net.HardwareAddr
}

func newIPLab(t *testing.T, nodeAddr, clientAddr string) *ipLab {
	t.Helper()
	needRoot(t)
	l := &ipLab{node: newNS(t), client: newNS(t)}
	hn, err := netlink.NewHandleAt(l.node)
	if err != nil {
		t.Fatal(err)
	}
	defer hn.Close()
	hc, err := netlink.NewHandleAt(l.client)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ipNodeIf}, PeerName: ipClientIf, PeerNamespace: netlink.NsFd(int(l.client))}
	if err := hn.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	setup := func(h *netlink.Handle, name, addr string) net.HardwareAddr {
		for _, n := range []string{"lo", name} {
			link, err := h.LinkByName(n)
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			if err := h.LinkSetUp(link); err != nil {
				t.Fatalf("%s up: %v", n, err)
			}
		}
		link, _ := h.LinkByName(name)
		a, err := netlink.ParseAddr(addr)
		if err != nil {
			t.Fatal(err)
		}
		if a.IP.To4() == nil {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			t.Fatalf("add %s to %s: %v", addr, name, err)
		}
		return link.Attrs().HardwareAddr
	}
	l.nodeMAC = setup(hn, ipNodeIf, nodeAddr)
	l.clientMAC = setup(hc, ipClientIf, clientAddr)
	return l
}

// capture opens a raw packet socket for protocol on the client's cl0.
func (l *ipLab) capture(t *testing.T, protocol int) *packet.Conn {
	t.Helper()
	var c *packet.Conn
	inNS(t, l.client, func() {
		ifi, err := net.InterfaceByName(ipClientIf)
		if err != nil {
			t.Errorf("%s: %v", ipClientIf, err)
			return
		}
		c, err = packet.Listen(ifi, packet.Raw, protocol, nil)
		if err != nil {
			t.Errorf("packet socket: %v", err)
		}
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// exec runs one action of a in the node's namespace.
func (l *ipLab) exec(t *testing.T, a Agent, action string, params map[string]string) Result {
	t.Helper()
	var res Result
	inNS(t, l.node, func() {
		res = a.Exec(context.Background(), Request{Resource: "vip", Action: action, Params: params, Timeout: 10 * time.Second})
	})
	return res
}

func (l *ipLab) want(t *testing.T, a Agent, action string, params map[string]string, want Code) Result {
	t.Helper()
	res := l.exec(t, a, action, params)
	if res.Code != want {
		t.Fatalf("%s: got %v (err %v), want %v; output: %s", action, res.Code, res.Err, want, res.Output)
	}
	return res
}

// nodeAddrs lists the node's addresses on vip0.
func (l *ipLab) nodeAddr(t *testing.T, ip string) *netlink.Addr {
	t.Helper()
	h, err := netlink.NewHandleAt(l.node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName(ipNodeIf)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for i := range addrs {
		if addrs[i].IP.Equal(net.ParseIP(ip)) {
			return &addrs[i]
		}
	}
	return nil
}

// arpCount counts gratuitous ARP requests and replies from mac for ip
// seen on c until want of each have arrived or the deadline passes.
func arpCount(t *testing.T, c *packet.Conn, mac net.HardwareAddr, ip netip.Addr, want int, deadline time.Time) (req, rep int) {
	t.Helper()
	if err := c.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for req < want || rep < want {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			return req, rep
		}
		p, ok := parseARPFrame(buf[:n])
		if !ok || !bytes.Equal(buf[6:12], mac) || !bytes.Equal(p.SenderHW, mac) || p.SenderIP != ip || p.TargetIP != ip {
			continue
		}
		if !bytes.Equal(buf[0:6], etherBroadcast) {
			t.Errorf("gratuitous ARP to %s, want broadcast", net.HardwareAddr(buf[0:6]))
		}
		switch p.Op {
		case arpRequest:
			req++
		case arpReply:
			rep++
		}
	}
	return req, rep
}

func ipAgentOf(t *testing.T) Agent {
	t.Helper()
	return mustGet(t, newTestRegistry(t), "vigil:ip")
}

func TestIPv4StartAnnounceMonitorStop(t *testing.T) {
	l := newIPLab(t, "198.18.0.1/24", "198.18.0.2/24")
	capt := l.capture(t, etherTypeARP)
	a := ipAgentOf(t)
	vip := netip.MustParseAddr("198.18.0.100")
	// No interface: found by the subnet of 198.18.0.1/24.
	params := map[string]string{"address": "198.18.0.100/24", "label": "vip", "announce_interval": "50ms"}

	l.want(t, a, ActionValidateAll, params, CodeOK)
	l.want(t, a, ActionMonitor, params, CodeNotRunning)
	// That start does not wait for the whole announcement series is
	// asserted by TestIPStopCancelsAnnouncements (1s × 50).
	l.want(t, a, ActionStart, params, CodeOK)
	got := l.nodeAddr(t, "198.18.0.100")
	if got == nil {
		t.Fatal("start did not add 198.18.0.100 to vip0")
	}
	if ones, _ := got.Mask.Size(); ones != 24 || got.Label != "vip0:vip" {
		t.Errorf("address %v label %q, want /24 and vip0:vip", got.IPNet, got.Label)
	}
	l.want(t, a, ActionMonitor, params, CodeOK)

	req, rep := arpCount(t, capt, l.nodeMAC, vip, 3, time.Now().Add(2*time.Second))
	if req != 3 || rep != 3 {
		t.Fatalf("captured %d gratuitous ARP requests and %d replies from %s, want 3 and 3", req, rep, l.nodeMAC)
	}

	// Start again: still OK, announces again.
	l.want(t, a, ActionStart, params, CodeOK)
	req, rep = arpCount(t, capt, l.nodeMAC, vip, 3, time.Now().Add(2*time.Second))
	if req != 3 || rep != 3 {
		t.Fatalf("second start: captured %d requests and %d replies, want 3 and 3", req, rep)
	}

	// Announce (a healed partition): the same series again, nothing else.
	if err := l.announce(t, a, params); err != nil {
		t.Fatalf("announce while held: %v", err)
	}
	req, rep = arpCount(t, capt, l.nodeMAC, vip, 3, time.Now().Add(2*time.Second))
	if req != 3 || rep != 3 {
		t.Fatalf("announce: captured %d requests and %d replies, want 3 and 3", req, rep)
	}

	l.want(t, a, ActionStop, params, CodeOK)
	if l.nodeAddr(t, "198.18.0.100") != nil {
		t.Fatal("stop left 198.18.0.100 on vip0")
	}
	l.want(t, a, ActionMonitor, params, CodeNotRunning)
	l.want(t, a, ActionStop, params, CodeOK)
	// An address not held here is never announced.
	if err := l.announce(t, a, params); err == nil {
		t.Fatal("announce of an address not held here succeeded")
	}
	if req, rep := arpCount(t, capt, l.nodeMAC, vip, 1, time.Now().Add(300*time.Millisecond)); req+rep != 0 {
		t.Fatalf("announce of an address not held sent %d requests and %d replies", req, rep)
	}
}

// announce runs the agent's Announce in the node's namespace.
func (l *ipLab) announce(t *testing.T, a Agent, params map[string]string) error {
	t.Helper()
	var err error
	inNS(t, l.node, func() {
		err = a.(Announcer).Announce(context.Background(), Request{Resource: "vip", Params: params})
	})
	return err
}

func TestIPStopCancelsAnnouncements(t *testing.T) {
	l := newIPLab(t, "198.18.0.1/24", "198.18.0.2/24")
	a := ipAgentOf(t)
	params := map[string]string{"address": "198.18.0.100/24", "interface": ipNodeIf, "announce_count": "50", "announce_interval": "1s"}
	start := time.Now()
	l.want(t, a, ActionStart, params, CodeOK)
	l.want(t, a, ActionStop, params, CodeOK)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("start+stop took %v: stop did not cancel the announcements", d)
	}
}

func TestIPMonitorLinkDown(t *testing.T) {
	l := newIPLab(t, "198.18.0.1/24", "198.18.0.2/24")
	a := ipAgentOf(t)
	params := map[string]string{"address": "198.18.0.100/24", "interface": ipNodeIf, "announce_count": "1"}
	l.want(t, a, ActionStart, params, CodeOK)
	h, err := netlink.NewHandleAt(l.client)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	peer, err := h.LinkByName(ipClientIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(peer); err != nil {
		t.Fatal(err)
	}
	var res Result
	for range 50 { // the carrier change is asynchronous
		if res = l.exec(t, a, ActionMonitor, params); res.Code != CodeOK {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if res.Code != CodeErrGeneric || !strings.Contains(res.Output, "down") {
		t.Fatalf("monitor with the link down: %v %q, want ERR_GENERIC saying down", res.Code, res.Output)
	}
	l.want(t, a, ActionStop, params, CodeOK)
}

func TestIPv6StartNoDADAndNA(t *testing.T) {
	l := newIPLab(t, "2001:2::1/64", "2001:2::2/64")
	capt := l.capture(t, unix.ETH_P_IPV6)
	a := ipAgentOf(t)
	vip := netip.MustParseAddr("2001:2::100")
	params := map[string]string{"address": "2001:2::100/64", "announce_count": "2", "announce_interval": "50ms"}
	l.want(t, a, ActionValidateAll, params, CodeOK)
	l.want(t, a, ActionStart, params, CodeOK)
	got := l.nodeAddr(t, "2001:2::100")
	if got == nil {
		t.Fatal("start did not add 2001:2::100")
	}
	if got.Flags&unix.IFA_F_TENTATIVE != 0 || got.Flags&unix.IFA_F_NODAD == 0 {
		t.Errorf("address flags %#x: want NODAD and not tentative", got.Flags)
	}
	l.want(t, a, ActionMonitor, params, CodeOK)

	nas := 0
	if err := capt.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for nas < 2 {
		n, _, err := capt.ReadFrom(buf)
		if err != nil {
			t.Fatalf("captured %d neighbour advertisements, want 2: %v", nas, err)
		}
		b := buf[:n]
		if n < 14+40+4 || binary.BigEndian.Uint16(b[12:14]) != unix.ETH_P_IPV6 || !bytes.Equal(b[6:12], l.nodeMAC) {
			continue
		}
		ip6 := b[14:]
		if ip6[6] != 58 || ip6[40] != byte(ipv6.ICMPTypeNeighborAdvertisement) {
			continue
		}
		if ip6[7] != 255 {
			t.Errorf("NA hop limit %d, want 255", ip6[7])
		}
		src, _ := netip.AddrFromSlice(ip6[8:24])
		dst, _ := netip.AddrFromSlice(ip6[24:40])
		m, err := ndp.ParseMessage(ip6[40:])
		if err != nil {
			t.Fatalf("parse NA: %v", err)
		}
		na := m.(*ndp.NeighborAdvertisement)
		if na.TargetAddress != vip || !na.Override || na.Solicited || src != vip || dst != netip.IPv6LinkLocalAllNodes() {
			t.Fatalf("NA %+v from %s to %s: want target %s, override, unsolicited, from %s to ff02::1", na, src, dst, vip, vip)
		}
		var tlla net.HardwareAddr
		for _, o := range na.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
				tlla = lla.Addr
			}
		}
		if !bytes.Equal(tlla, l.nodeMAC) {
			t.Fatalf("NA target link-layer address %s, want %s", tlla, l.nodeMAC)
		}
		nas++
	}
	l.want(t, a, ActionStop, params, CodeOK)
	if l.nodeAddr(t, "2001:2::100") != nil {
		t.Fatal("stop left 2001:2::100")
	}
	l.want(t, a, ActionMonitor, params, CodeNotRunning)
	l.want(t, a, ActionStop, params, CodeOK)
}

func TestIPValidateRefuses(t *testing.T) {
	a := ipAgentOf(t)
	for _, p := range []map[string]string{
		{},
		{"address": "not-an-address/24"},
		{"address": "198.18.0.10"},
		{"address": "198.18.0.10/33"},
		{"address": "198.18.0.10/0"},
		{"address": "198.18.0.10/x"},
		{"address": "2001:2::10/129"},
		{"address": "224.0.0.1/24"},
		{"address": "fe80::10/64"},
		{"address": "198.18.0.0/24"},
		{"address": "2001:2::10/64", "label": "vip"},
		{"address": "198.18.0.10/24", "announce_count": "-1"},
		{"address": "198.18.0.10/24", "announce_interval": "soon"},
		{"address": "198.18.0.10/24", "interface": "bad/name"},
		{"address": "198.18.0.10/24", "bogus": "1"},
	} {
		res := a.Exec(context.Background(), Request{Resource: "vip", Action: ActionValidateAll, Params: p})
		if res.Code != CodeErrConfigured || !errors.Is(res.Err, ErrInvalidParams) {
			t.Errorf("validate-all %v: got %v (%v), want ERR_CONFIGURED", p, res.Code, res.Err)
		}
		res = a.Exec(context.Background(), Request{Resource: "vip", Action: ActionStart, Params: p})
		if res.Code != CodeErrConfigured {
			t.Errorf("start %v: got %v (%v), want ERR_CONFIGURED", p, res.Code, res.Err)
		}
	}
	if _, ok := a.(ParamValidator); !ok {
		t.Error("vigil:ip is not a ParamValidator")
	}
}

func TestIPValidateUnknownInterface(t *testing.T) {
	l := newIPLab(t, "198.18.0.1/24", "198.18.0.2/24")
	a := ipAgentOf(t)
	res := l.exec(t, a, ActionValidateAll, map[string]string{"address": "198.18.0.10/24", "interface": "nosuch0"})
	if res.Code != CodeErrConfigured || !strings.Contains(res.Output, "nosuch0") {
		t.Errorf("unknown interface: %v %q, want ERR_CONFIGURED naming it", res.Code, res.Output)
	}
	// No interface and nothing reaches the address (no default route).
	res = l.exec(t, a, ActionValidateAll, map[string]string{"address": "198.19.5.10/24"})
	if res.Code != CodeErrConfigured {
		t.Errorf("unreachable address: %v %q, want ERR_CONFIGURED", res.Code, res.Output)
	}
	res = l.exec(t, a, ActionStart, map[string]string{"address": "198.18.0.10/24", "interface": "nosuch0"})
	if res.Code != CodeErrInstalled {
		t.Errorf("start on an unknown interface: %v, want ERR_INSTALLED", res.Code)
	}
	l.want(t, a, ActionMonitor, map[string]string{"address": "198.18.0.10/24", "interface": "nosuch0"}, CodeNotRunning)
	l.want(t, a, ActionStop, map[string]string{"address": "198.18.0.10/24", "interface": "nosuch0"}, CodeOK)
	l.want(t, a, ActionValidateAll, map[string]string{"address": "198.18.0.10/24", "interface": ipNodeIf}, CodeOK)
}

func TestIPMetadata(t *testing.T) {
	r := newTestRegistry(t)
	a := mustGet(t, r, "vigil:ip")
	res := a.Exec(context.Background(), Request{Action: ActionMetaData})
	md, err := ParseMetadata([]byte(res.Output))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"address", "interface", "label", "announce_count", "announce_interval"} {
		if _, ok := md.Param(name); !ok {
			t.Errorf("meta-data lacks %s", name)
		}
	}
	if p, _ := md.Param("address"); !p.Required {
		t.Error("address is not required")
	}
}

// An address another host holds answers the ARP probe (IPv4) or the
// duplicate-address probe (IPv6): start refuses, naming the MAC, and adds
// nothing.
func TestIPStartRefusedWhenAddressAnswers(t *testing.T) {
	for _, tc := range []struct{ node, client, vip string }{
		{"198.18.0.1/24", "198.18.0.2/24", "198.18.0.100/24"},
		{"2001:2::1/64", "2001:2::2/64", "2001:2::100/64"},
	} {
		t.Run(tc.vip, func(t *testing.T) {
			l := newIPLab(t, tc.node, tc.client)
			h, err := netlink.NewHandleAt(l.client)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			link, err := h.LinkByName(ipClientIf)
			if err != nil {
				t.Fatal(err)
			}
			addr, _ := netlink.ParseAddr(tc.vip)
			if addr.IP.To4() == nil {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := h.AddrAdd(link, addr); err != nil {
				t.Fatal(err)
			}
			if addr.IP.To4() == nil {
				// The client's kernel answers neighbour discovery only once
				// its interface is ready: its link-local address no longer
				// tentative (a just-created veth; a real host's is long up).
				waitLinkLocal(t, h, link)
			}
			a := ipAgentOf(t)
			params := map[string]string{"address": tc.vip, "interface": ipNodeIf}
			res := l.want(t, a, ActionStart, params, CodeErrGeneric)
			if !strings.Contains(res.Output, l.clientMAC.String()) || !strings.Contains(res.Output, "already answers") {
				t.Errorf("refusal %q does not name the answering MAC %s", res.Output, l.clientMAC)
			}
			t.Logf("refusal: %s", res.Output)
			if l.nodeAddr(t, addr.IP.String()) != nil {
				t.Error("refused start added the address anyway")
			}
			l.want(t, a, ActionMonitor, params, CodeNotRunning)
		})
	}
}

// waitLinkLocal waits until link has a link-local IPv6 address that is no
// longer tentative.
func waitLinkLocal(t *testing.T, h *netlink.Handle, link netlink.Link) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready link-local address on %s after 10s: %v", link.Attrs().Name, addrs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
