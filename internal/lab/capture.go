package lab

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Announcement is one address announcement seen on the wire: a gratuitous
// ARP (sender and target IP both the address) or an unsolicited neighbour
// advertisement.
type Announcement struct {
	At time.Time
	// Kind is "arp-request", "arp-reply" or "na".
	Kind string
	// MAC is the frame's source hardware address.
	MAC string
	// Addr is the announced address.
	Addr netip.Addr
}

// Capture records the announcements a client's interface receives.
type Capture struct {
	conn *packet.Conn
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	seen []Announcement
}

// CaptureAnnouncements starts recording, on client c's interface, every
// gratuitous ARP and unsolicited neighbour advertisement (both are sent to
// everyone on the link). It stops when the test ends or on Close.
func (l *Lab) CaptureAnnouncements(c *Client) *Capture {
	l.t.Helper()
	var conn *packet.Conn
	err := InNetns(c.Netns, func() error {
		ifi, err := net.InterfaceByName(c.Iface)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		l.t.Fatalf("lab: capture on %s: %v", c.Name, err)
	}
	cp := &Capture{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go cp.run()
	l.t.Cleanup(cp.Close)
	return cp
}

func (cp *Capture) run() {
	defer close(cp.done)
	buf := make([]byte, 2048)
	for {
		select {
		case <-cp.stop:
			return
		default:
		}
		// A short deadline, so that Close never waits on a blocked read.
		_ = cp.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := cp.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a timeout, or a transient error
		}
		if a, ok := parseAnnouncement(buf[:n]); ok {
			a.At = time.Now()
			cp.mu.Lock()
			cp.seen = append(cp.seen, a)
			cp.mu.Unlock()
		}
	}
}

// parseAnnouncement recognizes a gratuitous ARP or an ICMPv6 neighbour
// advertisement in an Ethernet frame.
func parseAnnouncement(f []byte) (Announcement, bool) {
	if len(f) < 14 {
		return Announcement{}, false
	}
	mac := net.HardwareAddr(f[6:12]).String()
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_ARP:
		if len(f) < 42 {
			return Announcement{}, false
		}
		sender, _ := netip.AddrFromSlice(f[28:32])
		target, _ := netip.AddrFromSlice(f[38:42])
		if sender != target {
			return Announcement{}, false
		}
		kind := "arp-request"
		if binary.BigEndian.Uint16(f[20:22]) == 2 {
			kind = "arp-reply"
		}
		return Announcement{Kind: kind, MAC: mac, Addr: sender}, true
	case unix.ETH_P_IPV6:
		// Fixed header only: neighbour discovery carries no extension
		// headers.
		if len(f) < 14+40+24 || f[14+6] != unix.IPPROTO_ICMPV6 || f[14+40] != 136 {
			return Announcement{}, false
		}
		target, _ := netip.AddrFromSlice(f[14+40+8 : 14+40+24])
		return Announcement{Kind: "na", MAC: mac, Addr: target}, true
	}
	return Announcement{}, false
}

// Since returns the announcements of addr from mac seen at or after t.
func (cp *Capture) Since(t time.Time, addr netip.Addr, mac string) []Announcement {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []Announcement
	for _, a := range cp.seen {
		if !a.At.Before(t) && a.Addr == addr && a.MAC == mac {
			out = append(out, a)
		}
	}
	return out
}

// Count returns how many announcements of each kind are in as.
func Count(as []Announcement) map[string]int {
	out := map[string]int{}
	for _, a := range as {
		out[a.Kind]++
	}
	return out
}

// Close stops the capture.
func (cp *Capture) Close() {
	cp.once.Do(func() {
		close(cp.stop)
		<-cp.done
		_ = cp.conn.Close()
	})
}
