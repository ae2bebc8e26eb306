package agents

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Ethernet and ARP constants (RFC 826).
const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	etherHdrLen   = 14
	arpLen        = 28
	etherMinFrame = 60 // without FCS
	arpRequest    = 1
	arpReply      = 2
)

var etherBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ipPacketConn is the part of *packet.Conn the ARP code uses.
type ipPacketConn interface {
	ReadFrom(b []byte) (int, net.Addr, error)
	WriteTo(b []byte, addr net.Addr) (int, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// listenARP opens a raw AF_PACKET socket for ARP frames on ifi, in the
// calling thread's network namespace.
func listenARP(ifi *net.Interface) (ipPacketConn, error) {
	return packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
}

// arpPacket is an Ethernet/IPv4 ARP packet.
type arpPacket struct {
	Op       uint16
	SenderHW net.HardwareAddr
	SenderIP netip.Addr
	TargetHW net.HardwareAddr
	TargetIP netip.Addr
}

// arpFrame builds a broadcast Ethernet frame carrying p, from src.
func arpFrame(src net.HardwareAddr, p arpPacket) []byte {
	b := make([]byte, etherMinFrame)
	copy(b[0:6], etherBroadcast)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherTypeARP)
	a := b[etherHdrLen:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], p.Op)
	copy(a[8:14], p.SenderHW)
	spa, tpa := p.SenderIP.As4(), p.TargetIP.As4()
	copy(a[14:18], spa[:])
	copy(a[18:24], p.TargetHW)
	copy(a[24:28], tpa[:])
	return b
}

// parseARPFrame parses an Ethernet frame carrying an Ethernet/IPv4 ARP
// packet.
func parseARPFrame(b []byte) (arpPacket, bool) {
	if len(b) < etherHdrLen+arpLen || binary.BigEndian.Uint16(b[12:14]) != etherTypeARP {
		return arpPacket{}, false
	}
	a := b[etherHdrLen:]
	if binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != etherTypeIPv4 || a[4] != 6 || a[5] != 4 {
		return arpPacket{}, false
	}
	return arpPacket{
		Op:       binary.BigEndian.Uint16(a[6:8]),
		SenderHW: net.HardwareAddr(bytes.Clone(a[8:14])),
		SenderIP: netip.AddrFrom4([4]byte(a[14:18])),
		TargetHW: net.HardwareAddr(bytes.Clone(a[18:24])),
		TargetIP: netip.AddrFrom4([4]byte(a[24:28])),
	}, true
}

// arpProbe sends an ARP probe for ip (RFC 5227: sender address 0.0.0.0)
// and waits up to wait for another MAC to claim ip, by a reply or by a
// request of its own sent from ip. It returns that MAC, or nil.
func arpProbe(ctx context.Context, c ipPacketConn, mac net.HardwareAddr, ip netip.Addr, wait time.Duration) (net.HardwareAddr, error) {
	probe := arpFrame(mac, arpPacket{
		Op: arpRequest, SenderHW: mac, SenderIP: netip.IPv4Unspecified(),
		TargetHW: make(net.HardwareAddr, 6), TargetIP: ip,
	})
	if _, err := c.WriteTo(probe, &packet.Addr{HardwareAddr: etherBroadcast}); err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(probeDeadline(ctx, wait)); err != nil {
		return nil, err
	}
	buf := make([]byte, 1514)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, ctx.Err()
			}
			return nil, err
		}
		p, ok := parseARPFrame(buf[:n])
		if !ok || bytes.Equal(p.SenderHW, mac) || p.SenderIP != ip {
			continue
		}
		if p.Op == arpReply || p.Op == arpRequest {
			return p.SenderHW, nil
		}
	}
}

// announcer sends one round of announcements of an address.
type announcer interface {
	announce() error
	Close() error
}

// arpAnnouncer sends a gratuitous ARP request and a gratuitous ARP reply,
// both broadcast.
type arpAnnouncer struct {
	conn ipPacketConn
	mac  net.HardwareAddr
	ip   netip.Addr
}

func (a *arpAnnouncer) announce() error {
	req := arpFrame(a.mac, arpPacket{Op: arpRequest, SenderHW: a.mac, SenderIP: a.ip, TargetHW: make(net.HardwareAddr, 6), TargetIP: a.ip})
	rep := arpFrame(a.mac, arpPacket{Op: arpReply, SenderHW: a.mac, SenderIP: a.ip, TargetHW: a.mac, TargetIP: a.ip})
	dst := &packet.Addr{HardwareAddr: etherBroadcast}
	if _, err := a.conn.WriteTo(req, dst); err != nil {
		return fmt.Errorf("gratuitous ARP request: %w", err)
	}
	if _, err := a.conn.WriteTo(rep, dst); err != nil {
		return fmt.Errorf("gratuitous ARP reply: %w", err)
	}
	return nil
}

func (a *arpAnnouncer) Close() error { return a.conn.Close() }

// naAnnouncer sends an unsolicited neighbour advertisement (RFC 4861
// 7.2.6: override set, solicited clear, target link-layer address) to the
// all-nodes group, from the address itself.
type naAnnouncer struct {
	conn *ndp.Conn
	msg  *ndp.NeighborAdvertisement
}

func newNAAnnouncer(ifi *net.Interface, ip netip.Addr) (*naAnnouncer, error) {
	c, _, err := ndp.Listen(ifi, ndp.Addr(ip.String()))
	if err != nil {
		return nil, err
	}
	return &naAnnouncer{conn: c, msg: &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{
			Direction: ndp.Target,
			Addr:      ifi.HardwareAddr,
		}},
	}}, nil
}

func (a *naAnnouncer) announce() error {
	if err := a.conn.WriteTo(a.msg, nil, netip.IPv6LinkLocalAllNodes()); err != nil {
		return fmt.Errorf("unsolicited neighbour advertisement: %w", err)
	}
	return nil
}

func (a *naAnnouncer) Close() error { return a.conn.Close() }

var _ ipPacketConn = (*packet.Conn)(nil)

// ndpProbe is the IPv6 counterpart of arpProbe, as duplicate address
// detection does it (RFC 4862 5.4): a neighbour solicitation for ip from
// the unspecified address to ip's solicited-node group; a neighbour
// advertisement for ip from another MAC within wait means another host
// holds it. It returns that MAC, or nil. The solicitation is written as a
// whole Ethernet frame: the kernel would put a source address of its own
// on an ICMPv6 socket's packet, and a solicitation from an address is not
// a probe.
func ndpProbe(ctx context.Context, ifi *net.Interface, ip netip.Addr, wait time.Duration) (net.HardwareAddr, error) {
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, nil)
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	defer c.Close()
	group, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		return nil, err
	}
	body, err := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: ip})
	if err != nil {
		return nil, err
	}
	g := group.As16()
	dstMAC := net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
	frame := ipv6Frame(ifi.HardwareAddr, dstMAC, netip.IPv6Unspecified(), group, body)
	if _, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: dstMAC}); err != nil {
		return nil, fmt.Errorf("neighbour solicitation: %w", err)
	}
	if err := c.SetReadDeadline(probeDeadline(ctx, wait)); err != nil {
		return nil, err
	}
	buf := make([]byte, 1514)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, ctx.Err()
			}
			return nil, err
		}
		f := buf[:n]
		if n < 14+40+24 || f[14+6] != unix.IPPROTO_ICMPV6 || bytes.Equal(f[6:12], ifi.HardwareAddr) {
			continue
		}
		m, err := ndp.ParseMessage(f[14+40:])
		if err != nil {
			continue
		}
		if na, ok := m.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == ip {
			mac := slices.Clone(net.HardwareAddr(f[6:12]))
			for _, o := range na.Options {
				if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
					mac = lla.Addr
				}
			}
			return mac, nil
		}
	}
}

// ipv6Frame builds an Ethernet frame carrying an ICMPv6 message body (its
// checksum computed here) from src to dst, hop limit 255.
func ipv6Frame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, body []byte) []byte {
	b := make([]byte, 14+40+len(body))
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_IPV6)
	h := b[14:54]
	h[0] = 6 << 4
	binary.BigEndian.PutUint16(h[4:6], uint16(len(body)))
	h[6] = unix.IPPROTO_ICMPV6
	h[7] = 255
	s16, d16 := src.As16(), dst.As16()
	copy(h[8:24], s16[:])
	copy(h[24:40], d16[:])
	msg := b[54:]
	copy(msg, body)
	msg[2], msg[3] = 0, 0
	// Checksum over the pseudo-header (addresses, length, next header)
	// and the message.
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(p[i])<<8 | uint32(p[i+1])
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(s16[:])
	add(d16[:])
	sum += uint32(len(msg)) + unix.IPPROTO_ICMPV6
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(msg[2:4], ^uint16(sum))
	return b
}

// probeDeadline is when a probe stops waiting for an answer: after wait,
// or at ctx's deadline if sooner.
func probeDeadline(ctx context.Context, wait time.Duration) time.Time {
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return deadline
}
