package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TypeIP is the built-in virtual IP address agent, vigil:ip.
const TypeIP = "ip"

// Defaults and bounds of vigil:ip.
const (
	ipDefaultAnnounceCount    = 3
	ipDefaultAnnounceInterval = 200 * time.Millisecond
	ipMaxAnnounceCount        = 100
	// ipProbeWait is how long start waits for an answer to its ARP probe.
	ipProbeWait = 200 * time.Millisecond
)

// ParamValidator is implemented by agents that can check parameters beyond
// what their meta-data says (vigil:ip parses the address and looks up the
// interface). ValidateParams returns an error wrapping ErrInvalidParams.
// The validate-all action runs it too.
type ParamValidator interface {
	ValidateParams(ctx context.Context, params map[string]string) error
}

// Announcer is implemented by agents whose active resources must be
// announced to the network again when it changes under them: after a
// partition heals, neighbours may have cached a stale owner of a virtual
// IP. Announce changes nothing on the node; it fails when the resource is
// not active here.
type Announcer interface {
	Announce(ctx context.Context, req Request) error
}

// ipAgent is vigil:ip: an IPv4 or IPv6 address on an interface of this
// node's network namespace (the namespace of the calling thread), announced
// with gratuitous ARP (request and reply) or an unsolicited neighbour
// advertisement when it starts.
//
// All sockets are opened by the goroutine running the action, so a caller
// that runs actions on a thread locked into a network namespace gets that
// namespace; background announcements reuse those sockets.
type ipAgent struct {
	log *slog.Logger

	mu         sync.Mutex
	announcers map[string]*ipAnnouncer // by resource, while repeating
}

// ipAnnouncer is the background goroutine that repeats a start's
// announcements.
type ipAnnouncer struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newIP(log *slog.Logger) *ipAgent {
	return &ipAgent{log: log, announcers: map[string]*ipAnnouncer{}}
}

var ipMeta = &Metadata{
	Name:       TypeIP,
	Version:    "1.0",
	OCFVersion: "1.1",
	ShortDesc:  "Virtual IP address (IPv4 or IPv6), announced when it starts",
	LongDesc: "Built-in agent: start refuses an IPv4 address that already answers an ARP " +
		"probe from another MAC, adds the address (IPv6 without duplicate-address " +
		"detection), then announces it: gratuitous ARP request and reply for IPv4, an " +
		"unsolicited neighbour advertisement for IPv6, announce_count times, " +
		"announce_interval apart. stop removes the address. monitor reports whether the " +
		"address is on the interface and the link is up. Works in the network namespace " +
		"of the agent.",
	Params: []Param{
		{Name: "address", Required: true, Unique: true, Type: "string", ShortDesc: "Address with prefix length: 192.0.2.10/24 or 2001:db8::10/64"},
		{Name: "interface", Type: "string", ShortDesc: "Interface to hold the address; default the one with an address in the same subnet, else the one the route to the address leaves by"},
		{Name: "label", Type: "string", ShortDesc: "IPv4 address label: eth0:vip, or vip for <interface>:vip (at most 15 characters)"},
		{Name: "announce_count", Type: "integer", Default: strconv.Itoa(ipDefaultAnnounceCount), ShortDesc: "How many times start announces the address (0: never)"},
		{Name: "announce_interval", Type: "string", Default: ipDefaultAnnounceInterval.String(), ShortDesc: "Time between announcements, e.g. 200ms"},
	},
	Actions: []ActionSpec{
		{Name: ActionStart, Timeout: 20 * time.Second},
		{Name: ActionStop, Timeout: 20 * time.Second},
		{Name: ActionMonitor, Timeout: 20 * time.Second, Interval: 10 * time.Second},
		{Name: ActionMetaData, Timeout: 5 * time.Second},
		{Name: ActionValidateAll, Timeout: 20 * time.Second},
	},
}

func (a *ipAgent) meta() *Metadata { return ipMeta }

// Metadata returns the built-in meta-data.
func (a *ipAgent) Metadata(context.Context) (*Metadata, error) { return ipMeta, nil }

// outerCtxKey carries the caller's context (without the action's timeout)
// to the action, which bounds background announcements by it.
type outerCtxKey struct{}

// Exec runs one action.
func (a *ipAgent) Exec(ctx context.Context, req Request) Result {
	start := time.Now()
	var res Result
	if req.Action == ActionValidateAll {
		if err := a.ValidateParams(ctx, req.Params); err != nil {
			res = Result{Code: CodeErrConfigured, Output: err.Error(), Err: err}
		} else {
			res = Result{Code: CodeOK}
		}
		res.Duration = time.Since(start)
	} else {
		res = runBuiltin(context.WithValue(ctx, outerCtxKey{}, ctx), a, req)
	}
	a.log.Debug("ip action", "resource", req.Resource, "action", req.Action,
		"code", res.Code, "duration", res.Duration, "err", res.Err)
	return res
}

// ipConfig is a parsed parameter set.
type ipConfig struct {
	prefix   netip.Prefix // the address (not masked) and its length
	iface    string       // "" = find it
	label    string       // as given ("" = none)
	count    int
	interval time.Duration
}

func (c ipConfig) addr() netip.Addr { return c.prefix.Addr() }

func ipInvalid(format string, args ...any) error {
	return &ValidationError{Agent: TypeIP, Invalid: []string{fmt.Sprintf(format, args...)}}
}

// parseIPParams checks the parameters without looking at the system.
func parseIPParams(params map[string]string) (ipConfig, error) {
	if err := ipMeta.Validate(params); err != nil {
		return ipConfig{}, err
	}
	var c ipConfig
	s := strings.TrimSpace(params["address"])
	if !strings.Contains(s, "/") {
		return c, ipInvalid("address: %q has no prefix length (want e.g. 192.0.2.10/24)", s)
	}
	addrPart, bitsPart, _ := strings.Cut(s, "/")
	ip, err := netip.ParseAddr(addrPart)
	if err != nil || ip.Zone() != "" {
		return c, ipInvalid("address: %q is not an IPv4 or IPv6 address", addrPart)
	}
	ip = ip.Unmap()
	bits, err := strconv.Atoi(bitsPart)
	if err != nil || bits < 1 || bits > ip.BitLen() {
		return c, ipInvalid("address: prefix length %q out of range 1..%d", bitsPart, ip.BitLen())
	}
	if !ip.IsGlobalUnicast() && !ip.IsPrivate() && !(ip.Is4() && ip.IsLinkLocalUnicast()) {
		return c, ipInvalid("address: %s is not a unicast address (IPv6 link-local addresses are not supported)", ip)
	}
	if ip.Is4() && bits <= 30 {
		p := netip.PrefixFrom(ip, bits).Masked()
		if ip == p.Addr() || ip == ipv4Broadcast(p) {
			return c, ipInvalid("address: %s is the network or broadcast address of %s", ip, p)
		}
	}
	c.prefix = netip.PrefixFrom(ip, bits)
	c.iface = strings.TrimSpace(params["interface"])
	if c.iface != "" && (len(c.iface) > unix.IFNAMSIZ-1 || strings.ContainsAny(c.iface, "/ \t\n")) {
		return c, ipInvalid("interface: %q is not an interface name", c.iface)
	}
	c.label = strings.TrimSpace(params["label"])
	if c.label != "" && ip.Is6() {
		return c, ipInvalid("label: IPv6 addresses have no label")
	}
	c.count = ipDefaultAnnounceCount
	if v := strings.TrimSpace(params["announce_count"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > ipMaxAnnounceCount {
			return c, ipInvalid("announce_count: %q out of range 0..%d", v, ipMaxAnnounceCount)
		}
		c.count = n
	}
	c.interval = ipDefaultAnnounceInterval
	if params["announce_interval"] != "" {
		d, err := durationParam(params, "announce_interval")
		if err != nil {
			return c, ipInvalid("announce_interval: %q is not a duration", params["announce_interval"])
		}
		c.interval = d
	}
	return c, nil
}

func ipv4Broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(b)
}

// fullLabel is the label as the kernel wants it: prefixed by the interface
// name.
func (c ipConfig) fullLabel(ifname string) (string, error) {
	if c.label == "" {
		return "", nil
	}
	l := c.label
	if !strings.HasPrefix(l, ifname) {
		l = ifname + ":" + l
	}
	if len(l) > unix.IFNAMSIZ-1 {
		return "", ipInvalid("label: %q is longer than %d characters", l, unix.IFNAMSIZ-1)
	}
	return l, nil
}

// errNoInterface: the interface is missing, or none reaches the address.
var errNoInterface = errors.New("no such interface")

// findLink returns the link to hold the address: the named one; else one
// that already holds it; else one with an address in the same subnet; else
// the one the route to the address leaves by (not loopback).
func findLink(c ipConfig) (netlink.Link, error) {
	if c.iface != "" {
		l, err := netlink.LinkByName(c.iface)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
				return nil, fmt.Errorf("interface %q: %w", c.iface, errNoInterface)
			}
			return nil, fmt.Errorf("interface %q: %w", c.iface, err)
		}
		return l, nil
	}
	family := netlink.FAMILY_V4
	if c.addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, family)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var subnet int
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip == c.addr() {
			return netlink.LinkByIndex(a.LinkIndex)
		}
		ones, _ := a.Mask.Size()
		if subnet == 0 && !ip.IsLoopback() && netip.PrefixFrom(ip, ones).Masked().Contains(c.addr()) {
			subnet = a.LinkIndex
		}
	}
	if subnet != 0 {
		return netlink.LinkByIndex(subnet)
	}
	routes, err := netlink.RouteGet(c.addr().AsSlice())
	if err == nil {
		for _, r := range routes {
			if r.LinkIndex == 0 {
				continue
			}
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err == nil && l.Attrs().Flags&net.FlagLoopback == 0 {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface reaches %s (set interface): %w", c.addr(), errNoInterface)
}

// ValidateParams checks the parameters and that the interface exists here
// (or that one reaches the address).
func (a *ipAgent) ValidateParams(_ context.Context, params map[string]string) error {
	c, err := parseIPParams(params)
	if err != nil {
		return err
	}
	l, err := findLink(c)
	if err != nil {
		return ipInvalid("interface: %v", err)
	}
	if _, err := c.fullLabel(l.Attrs().Name); err != nil {
		return err
	}
	return nil
}

func (a *ipAgent) action(ctx context.Context, req Request) (Result, bool) {
	switch req.Action {
	case ActionStart, ActionStop, ActionMonitor:
	default:
		return Result{}, false
	}
	c, err := parseIPParams(req.Params)
	if err != nil {
		return Result{Code: CodeErrConfigured, Output: err.Error(), Err: err}, true
	}
	switch req.Action {
	case ActionStart:
		return a.start(ctx, req, c), true
	case ActionStop:
		return a.stop(req, c), true
	default:
		return a.monitor(c), true
	}
}

func ipFail(code Code, format string, args ...any) Result {
	err := fmt.Errorf("agents: vigil:ip "+format, args...)
	return Result{Code: code, Output: err.Error(), Err: err}
}

// findAddr returns the address as it is on link, or nil.
func findAddr(link netlink.Link, ip netip.Addr) (*netlink.Addr, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return nil, err
	}
	for i := range addrs {
		if a, ok := netip.AddrFromSlice(addrs[i].IP); ok && a.Unmap() == ip {
			return &addrs[i], nil
		}
	}
	return nil, nil
}

// linkUp reports whether the link is administratively up and its carrier
// is not down (unknown counts as up: loopback, dummy, tun).
func linkUp(l netlink.Link) bool {
	at := l.Attrs()
	if at.Flags&net.FlagUp == 0 {
		return false
	}
	return at.OperState == netlink.OperUp || at.OperState == netlink.OperUnknown
}

func (a *ipAgent) monitor(c ipConfig) Result {
	link, err := findLink(c)
	if errors.Is(err, errNoInterface) {
		return Result{Code: CodeNotRunning, Output: err.Error()}
	}
	if err != nil {
		return ipFail(CodeErrGeneric, "monitor %s: %v", c.prefix, err)
	}
	have, err := findAddr(link, c.addr())
	if err != nil {
		return ipFail(CodeErrGeneric, "monitor %s: %v", c.prefix, err)
	}
	name := link.Attrs().Name
	if have == nil {
		return Result{Code: CodeNotRunning}
	}
	if have.Flags&unix.IFA_F_DADFAILED != 0 {
		return ipFail(CodeErrGeneric, "monitor %s: duplicate address detection failed on %s", c.prefix, name)
	}
	if !linkUp(link) {
		return ipFail(CodeErrGeneric, "monitor %s: link %s is down (state %s)", c.prefix, name, link.Attrs().OperState)
	}
	return Result{Code: CodeOK}
}

func (a *ipAgent) stop(req Request, c ipConfig) Result {
	a.stopAnnouncer(req.Resource)
	link, err := findLink(c)
	if errors.Is(err, errNoInterface) {
		return Result{Code: CodeOK} // the address cannot be there
	}
	if err != nil {
		return ipFail(CodeErrGeneric, "stop %s: %v", c.prefix, err)
	}
	have, err := findAddr(link, c.addr())
	if err != nil {
		return ipFail(CodeErrGeneric, "stop %s: %v", c.prefix, err)
	}
	if have == nil {
		return Result{Code: CodeOK}
	}
	if err := netlink.AddrDel(link, have); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return ipFail(CodeErrGeneric, "stop: remove %s from %s: %v", c.prefix, link.Attrs().Name, err)
	}
	return Result{Code: CodeOK}
}

func (a *ipAgent) start(ctx context.Context, req Request, c ipConfig) Result {
	a.stopAnnouncer(req.Resource)
	link, err := findLink(c)
	if errors.Is(err, errNoInterface) {
		return ipFail(CodeErrInstalled, "start %s: %v", c.prefix, err)
	}
	if err != nil {
		return ipFail(CodeErrGeneric, "start %s: %v", c.prefix, err)
	}
	at := link.Attrs()
	if !linkUp(link) {
		return ipFail(CodeErrGeneric, "start %s: link %s is down (state %s)", c.prefix, at.Name, at.OperState)
	}
	label, err := c.fullLabel(at.Name)
	if err != nil {
		return ipFail(CodeErrConfigured, "start %s: %v", c.prefix, err)
	}
	have, err := findAddr(link, c.addr())
	if err != nil {
		return ipFail(CodeErrGeneric, "start %s: %v", c.prefix, err)
	}
	var arpConn ipPacketConn
	if arpable(c, at) {
		arpConn, err = listenARP(attrsInterface(at))
		if err != nil {
			return ipFail(CodeErrGeneric, "start %s: open ARP socket on %s: %v", c.prefix, at.Name, err)
		}
	}
	closeARP := func() {
		if arpConn != nil {
			_ = arpConn.Close()
		}
	}

	if have == nil {
		if arpConn != nil {
			mac, err := arpProbe(ctx, arpConn, at.HardwareAddr, c.addr(), ipProbeWait)
			if err != nil {
				closeARP()
				if ctx.Err() != nil {
					return ctxResult(ctx)
				}
				return ipFail(CodeErrGeneric, "start %s: ARP probe on %s: %v", c.prefix, at.Name, err)
			}
			if mac != nil {
				closeARP()
				return ipFail(CodeErrGeneric, "start %s: refusing: %s already answers on %s from MAC %s (another host holds the address)",
					c.prefix, c.addr(), at.Name, mac)
			}
		} else if c.addr().Is6() && len(at.HardwareAddr) > 0 && at.Flags&net.FlagLoopback == 0 {
			mac, err := ndpProbe(ctx, attrsInterface(at), c.addr(), ipProbeWait)
			if err != nil {
				if ctx.Err() != nil {
					return ctxResult(ctx)
				}
				return ipFail(CodeErrGeneric, "start %s: neighbour solicitation on %s: %v", c.prefix, at.Name, err)
			}
			if mac != nil {
				return ipFail(CodeErrGeneric, "start %s: refusing: %s already answers on %s from MAC %s (another host holds the address)",
					c.prefix, c.addr(), at.Name, mac)
			}
		}
		na := &netlink.Addr{IPNet: prefixIPNet(c.prefix), Label: label}
		if c.addr().Is6() {
			na.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, na); err != nil && !errors.Is(err, unix.EEXIST) {
			closeARP()
			return ipFail(CodeErrGeneric, "start: add %s to %s: %v", c.prefix, at.Name, err)
		}
	}

	return a.announce(ctx, req.Resource, c, at, arpConn)
}

// announce sends c.count announcements of c's address from interface at
// (arpConn: the open ARP socket for IPv4, else nil): the first now, the
// others in the background, bounded by the caller's outer context (see
// outerCtxKey) and by the resource's next start, stop or announcement.
// It owns arpConn.
func (a *ipAgent) announce(ctx context.Context, resource string, c ipConfig, at *netlink.LinkAttrs, arpConn ipPacketConn) Result {
	closeARP := func() {
		if arpConn != nil {
			_ = arpConn.Close()
		}
	}
	if c.count == 0 {
		closeARP()
		return Result{Code: CodeOK}
	}
	var ann announcer
	var err error
	switch {
	case arpConn != nil:
		ann = &arpAnnouncer{conn: arpConn, mac: at.HardwareAddr, ip: c.addr()}
	case c.addr().Is6() && len(at.HardwareAddr) > 0 && at.Flags&net.FlagLoopback == 0:
		ann, err = newNAAnnouncer(attrsInterface(at), c.addr())
		if err != nil {
			return ipFail(CodeErrGeneric, "announce %s: open ICMPv6 socket on %s: %v", c.prefix, at.Name, err)
		}
	default:
		return Result{Code: CodeOK, Output: fmt.Sprintf("%s cannot be announced on %s (no link-layer address)", c.addr(), at.Name)}
	}
	if err := ann.announce(); err != nil {
		_ = ann.Close()
		return ipFail(CodeErrGeneric, "announce %s on %s: %v", c.prefix, at.Name, err)
	}
	if c.count == 1 {
		_ = ann.Close()
		return Result{Code: CodeOK}
	}
	outer, _ := ctx.Value(outerCtxKey{}).(context.Context)
	if outer == nil {
		outer = context.Background()
	}
	a.startAnnouncer(outer, resource, ann, c, at.Name)
	return Result{Code: CodeOK}
}

// Announce announces an address this node holds again, as start does
// (announce_count times, announce_interval apart), without probing or
// changing anything: the executor calls it when a partition heals, so that
// neighbours that cached a stale owner during the partition learn the
// holder's MAC at once. It fails when the address is not on its interface
// here.
func (a *ipAgent) Announce(ctx context.Context, req Request) error {
	c, err := parseIPParams(req.Params)
	if err != nil {
		return err
	}
	a.stopAnnouncer(req.Resource)
	link, err := findLink(c)
	if err != nil {
		return fmt.Errorf("announce %s: %w", c.prefix, err)
	}
	at := link.Attrs()
	have, err := findAddr(link, c.addr())
	if err != nil {
		return fmt.Errorf("announce %s: %w", c.prefix, err)
	}
	if have == nil {
		return fmt.Errorf("announce %s: the address is not on %s here", c.prefix, at.Name)
	}
	if !linkUp(link) {
		return fmt.Errorf("announce %s: link %s is down", c.prefix, at.Name)
	}
	var arpConn ipPacketConn
	if arpable(c, at) {
		if arpConn, err = listenARP(attrsInterface(at)); err != nil {
			return fmt.Errorf("announce %s: open ARP socket on %s: %w", c.prefix, at.Name, err)
		}
	}
	// The background repeats outlive the caller's action: bound them by
	// their own timeout only (and by the resource's next action).
	ctx = context.WithValue(ctx, outerCtxKey{}, context.WithoutCancel(ctx))
	if res := a.announce(ctx, req.Resource, c, at, arpConn); res.Code != CodeOK {
		return res.Err
	}
	return nil
}

// arpable reports whether c's address is announced by ARP on at.
func arpable(c ipConfig, at *netlink.LinkAttrs) bool {
	return c.addr().Is4() && len(at.HardwareAddr) == 6 && at.Flags&net.FlagLoopback == 0 && at.RawFlags&unix.IFF_NOARP == 0
}

func attrsInterface(at *netlink.LinkAttrs) *net.Interface {
	return &net.Interface{Index: at.Index, MTU: at.MTU, Name: at.Name, HardwareAddr: at.HardwareAddr, Flags: at.Flags}
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// startAnnouncer repeats ann's announcement c.count-1 more times in the
// background, bounded by ctx and by the next start or stop of the resource.
func (a *ipAgent) startAnnouncer(ctx context.Context, resource string, ann announcer, c ipConfig, ifname string) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.count)*c.interval+time.Second)
	an := &ipAnnouncer{cancel: cancel, done: make(chan struct{})}
	a.mu.Lock()
	a.announcers[resource] = an
	a.mu.Unlock()
	go func() {
		defer close(an.done)
		defer cancel()
		defer ann.Close()
		for i := 1; i < c.count; i++ {
			if !sleepCtx(ctx, c.interval) {
				return
			}
			if err := ann.announce(); err != nil {
				a.log.Warn("vigil:ip announce failed", "resource", resource, "address", c.addr(), "interface", ifname, "err", err)
				return
			}
		}
		a.mu.Lock()
		if a.announcers[resource] == an {
			delete(a.announcers, resource)
		}
		a.mu.Unlock()
	}()
}

// stopAnnouncer cancels the resource's background announcements and waits
// for them to end.
func (a *ipAgent) stopAnnouncer(resource string) {
	a.mu.Lock()
	an := a.announcers[resource]
	delete(a.announcers, resource)
	a.mu.Unlock()
	if an != nil {
		an.cancel()
		<-an.done
	}
}
