package membership

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"slices"
	"strings"
	"time"
)

// Limits and defaults.
const (
	// MaxLinks is the most links a node may have (the same bound as
	// model.MaxLinks; the wire format carries the link index in one byte).
	MaxLinks = 8
	// MaxInfo is the largest Heartbeat.Info, in bytes. It keeps a heartbeat
	// well inside one unfragmented UDP datagram on any link.
	MaxInfo = 512
	// MaxNameLen is the longest node name the wire format carries.
	MaxNameLen = 255
	// LossWindow is the number of most recent sequence numbers per link over
	// which Loss is estimated (64 heartbeats: 12.8s at the default interval).
	LossWindow = 64

	// DefaultInterval is the heartbeat period on each link.
	DefaultInterval = 200 * time.Millisecond
	// DefaultNodeTimeout is how long a node must be silent on all links
	// before it is lost.
	DefaultNodeTimeout = time.Second
)

// Reasons Receive drops a heartbeat. The Service counts them.
var (
	ErrNotForMe    = errors.New("membership: heartbeat addressed to another node")
	ErrUnknownPeer = errors.New("membership: heartbeat from an unknown node")
	ErrBadLink     = errors.New("membership: heartbeat on a link the sender and receiver do not share")
	ErrStaleBoot   = errors.New("membership: heartbeat from an older incarnation")
	ErrReplay      = errors.New("membership: heartbeat replayed or too old")
)

// Peer is another node (or witness) as configured.
type Peer struct {
	// Name is the peer's unique node name.
	Name string
	// Links holds the peer's "host:port" for each link index. A peer may have
	// fewer links than self, and an empty string means the peer has no such
	// link. Heartbeats flow only on links both ends have.
	Links []string
}

// Config configures a Machine. Zero durations take defaults.
type Config struct {
	// Self is this node's name.
	Self string
	// SelfLinks is the number of links this node has (1..MaxLinks).
	SelfLinks int
	// Peers lists every other node and witness.
	Peers []Peer
	// Interval is the heartbeat period on each link (default 200ms).
	Interval time.Duration
	// NodeTimeout: a node is lost after being silent on ALL its links for
	// this long (default 1s). It must be at least three intervals, so that
	// two lost heartbeats in a row never lose a node.
	NodeTimeout time.Duration
	// LinkTimeout: a link is down after silence this long on it (default
	// NodeTimeout). It must lie within [2*Interval, NodeTimeout]: a link
	// silent longer than its node would be absurd.
	LinkTimeout time.Duration
	// SuspectTimeout: a node is suspect after being silent on all links for
	// this long (default NodeTimeout/2). Suspect is a warning, not a verdict;
	// it must be in (0, NodeTimeout].
	SuspectTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = DefaultNodeTimeout
	}
	if c.LinkTimeout == 0 {
		c.LinkTimeout = c.NodeTimeout
	}
	if c.SuspectTimeout == 0 {
		c.SuspectTimeout = c.NodeTimeout / 2
	}
	return c
}

// validate checks a config with defaults applied.
func (c Config) validate() error {
	if err := validName(c.Self); err != nil {
		return fmt.Errorf("membership: self: %w", err)
	}
	if c.SelfLinks < 1 || c.SelfLinks > MaxLinks {
		return fmt.Errorf("membership: self links: need 1 to %d, have %d", MaxLinks, c.SelfLinks)
	}
	switch {
	case c.Interval < 0 || c.NodeTimeout < 0 || c.LinkTimeout < 0 || c.SuspectTimeout < 0:
		return errors.New("membership: durations must not be negative")
	case c.NodeTimeout < 3*c.Interval:
		return fmt.Errorf("membership: node timeout %s must be at least three intervals (%s)", c.NodeTimeout, 3*c.Interval)
	case c.LinkTimeout < 2*c.Interval || c.LinkTimeout > c.NodeTimeout:
		return fmt.Errorf("membership: link timeout %s must be between two intervals (%s) and the node timeout (%s)", c.LinkTimeout, 2*c.Interval, c.NodeTimeout)
	case c.SuspectTimeout > c.NodeTimeout:
		return fmt.Errorf("membership: suspect timeout %s must not exceed the node timeout %s", c.SuspectTimeout, c.NodeTimeout)
	}
	return validatePeers(c.Self, c.SelfLinks, c.Peers)
}

func validName(s string) error {
	switch {
	case s == "":
		return errors.New("name is empty")
	case len(s) > MaxNameLen:
		return fmt.Errorf("name %.20q... longer than %d bytes", s, MaxNameLen)
	}
	return nil
}

func validatePeers(self string, selfLinks int, peers []Peer) error {
	seen := make(map[string]bool, len(peers))
	for i, p := range peers {
		if err := validName(p.Name); err != nil {
			return fmt.Errorf("membership: peer %d: %w", i, err)
		}
		if p.Name == self {
			return fmt.Errorf("membership: peer %q is self", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("membership: peer %q listed twice", p.Name)
		}
		seen[p.Name] = true
		if len(p.Links) == 0 || len(p.Links) > MaxLinks {
			return fmt.Errorf("membership: peer %q: need 1 to %d links, have %d", p.Name, MaxLinks, len(p.Links))
		}
		common := 0
		for li, a := range p.Links {
			if a == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("membership: peer %q link %d: %w", p.Name, li, err)
			}
			if li < selfLinks {
				common++
			}
		}
		if common == 0 {
			return fmt.Errorf("membership: peer %q shares no link with self", p.Name)
		}
	}
	return nil
}

// Heartbeat is one decoded, authenticated heartbeat.
type Heartbeat struct {
	From string // sender's node name
	To   string // addressee's node name
	Link int    // link index it was sent on
	// BootID names the sender's incarnation; larger is newer (see New).
	BootID uint64
	// Seq counts the sender's heartbeats to this addressee on this link,
	// from 1, within one incarnation. It guards against replays and measures
	// loss.
	Seq uint64
	// ToBoot is the addressee's BootID as the sender heard it on this link
	// (0: not heard on this link yet). The echo is meaningful only to that
	// incarnation.
	ToBoot uint64
	// SendTime is the sender's monotonic clock when it sent this.
	SendTime time.Duration
	// HasEcho says EchoTime and EchoHold are set.
	HasEcho bool
	// EchoTime is the SendTime of the newest heartbeat the sender got from
	// the addressee on this link; EchoHold is how long the sender held it
	// before sending this one. The addressee computes the round trip as
	// now - EchoTime - EchoHold on its own clock; the clocks of the two
	// nodes are never compared.
	EchoTime time.Duration
	EchoHold time.Duration
	// Info is an opaque payload (at most MaxInfo bytes) the agent piggybacks
	// on heartbeats. The Machine shares one slice among the heartbeats it
	// emits: do not modify it.
	Info []byte
}

// Outgoing is a heartbeat to send from the socket of link Link to Addr.
type Outgoing struct {
	Link int
	Addr string
	Msg  Heartbeat
}

// NodeStatus is a node's liveness as seen from here.
type NodeStatus uint8

const (
	// StatusUnknown: never heard from since this Machine started (or since
	// the peer was added). An unknown node is NOT a member and never turns
	// lost on its own: with no contact there is no evidence it was ever up,
	// so "lost" would be a guess. Whether to fence nodes unseen at start-up
	// is the controller's policy, not membership's.
	StatusUnknown NodeStatus = iota
	// StatusMember: heard on at least one link within SuspectTimeout.
	StatusMember
	// StatusSuspect: silent on all links for at least SuspectTimeout but
	// less than NodeTimeout. Still a member for quorum; a warning that
	// lets the agent get ready.
	StatusSuspect
	// StatusLost: silent on all links for at least NodeTimeout. It leaves
	// this state only when heard from again.
	StatusLost
)

func (s NodeStatus) String() string {
	switch s {
	case StatusUnknown:
		return "unknown"
	case StatusMember:
		return "member"
	case StatusSuspect:
		return "suspect"
	case StatusLost:
		return "lost"
	}
	return fmt.Sprintf("NodeStatus(%d)", uint8(s))
}

// IsMember reports whether the status counts as alive: member or suspect.
func (s NodeStatus) IsMember() bool { return s == StatusMember || s == StatusSuspect }

// LinkStatus is the state of one link to one peer.
type LinkStatus uint8

const (
	// LinkUnknown: nothing heard on this link yet.
	LinkUnknown LinkStatus = iota
	// LinkUp: heard within LinkTimeout.
	LinkUp
	// LinkDown: silent for at least LinkTimeout, or never heard while the
	// node was heard on other links for LinkTimeout.
	LinkDown
)

func (s LinkStatus) String() string {
	switch s {
	case LinkUnknown:
		return "unknown"
	case LinkUp:
		return "up"
	case LinkDown:
		return "down"
	}
	return fmt.Sprintf("LinkStatus(%d)", uint8(s))
}

// LinkState is the state of one link to one peer.
type LinkState struct {
	Index  int
	Addr   string
	Status LinkStatus
	// LastHeard is when the newest heartbeat arrived on this link (valid
	// unless Status is LinkUnknown).
	LastHeard time.Duration
	// RTT is the smoothed round trip (as TCP's SRTT, gain 1/8); LastRTT is
	// the newest sample. Both are 0 until the first sample.
	RTT, LastRTT time.Duration
	// Loss is the fraction of heartbeats missing among the last LossWindow
	// sequence numbers of the current incarnation (0 before any).
	Loss float64
	// Received counts heartbeats accepted on this link.
	Received uint64
	// HearsUs says the peer's newest heartbeat on this link named our
	// current BootID, i.e. the peer hears us: false on an up link means the
	// link works one way only.
	HearsUs bool
}

// NodeState is the state of one peer.
type NodeState struct {
	Name   string
	Status NodeStatus
	// BootID is the peer's current incarnation (0 while unknown).
	BootID uint64
	// LastHeard is when the newest heartbeat on any link arrived.
	LastHeard time.Duration
	// Restarts counts new incarnations seen since the first contact.
	Restarts int
	// Info is a copy of the Info of the newest heartbeat received (by
	// SendTime, over all links: a heartbeat delayed on one link never
	// replaces newer Info from another).
	Info []byte
	// InfoSend is the SendTime (on the peer's clock) of the heartbeat
	// whose Info is kept.
	InfoSend time.Duration
	// InfoHasEcho says that heartbeat was addressed to this node's current
	// incarnation (its ToBoot is our BootID) and carried an echo;
	// InfoEcho is then its EchoTime, on this node's clock: the peer had
	// received our heartbeat sent at InfoEcho before it sent the Info.
	InfoHasEcho bool
	InfoEcho    time.Duration
	// HasEcho says a heartbeat of the peer's current incarnation addressed
	// to our current incarnation carried an echo; Echo is the newest such
	// EchoTime (our own send time of the newest heartbeat the peer had
	// received from us, on any link), on this node's clock.
	HasEcho bool
	Echo    time.Duration
	Links   []LinkState
}

// ChangeKind says what a Change reports.
type ChangeKind uint8

const (
	// ChangeNode: a node's status went From → To.
	ChangeNode ChangeKind = iota + 1
	// ChangeLink: a link's status went LinkFrom → LinkTo.
	ChangeLink
	// ChangeRestart: the node came back as a new incarnation BootID, after
	// PrevBootID. Whatever the old incarnation ran is gone.
	ChangeRestart
	// ChangeInfo: the node sent a different Info.
	ChangeInfo
)

func (k ChangeKind) String() string {
	switch k {
	case ChangeNode:
		return "node"
	case ChangeLink:
		return "link"
	case ChangeRestart:
		return "restart"
	case ChangeInfo:
		return "info"
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// Change is one transition, reported once.
type Change struct {
	// At is the Machine time at which it was noticed.
	At   time.Duration
	Kind ChangeKind
	Node string
	// Link is the link index for ChangeLink, else -1.
	Link               int
	From, To           NodeStatus
	LinkFrom, LinkTo   LinkStatus
	BootID, PrevBootID uint64
	// LastHeard is the node's (ChangeNode) or link's (ChangeLink) last
	// heard time then; At-LastHeard is the silence that caused a loss.
	LastHeard time.Duration
}

func (c Change) String() string {
	switch c.Kind {
	case ChangeNode:
		return fmt.Sprintf("%s node %s: %s -> %s (last heard %s)", c.At, c.Node, c.From, c.To, c.LastHeard)
	case ChangeLink:
		return fmt.Sprintf("%s node %s link %d: %s -> %s (last heard %s)", c.At, c.Node, c.Link, c.LinkFrom, c.LinkTo, c.LastHeard)
	case ChangeRestart:
		return fmt.Sprintf("%s node %s: restarted, boot %#x -> %#x", c.At, c.Node, c.PrevBootID, c.BootID)
	case ChangeInfo:
		return fmt.Sprintf("%s node %s: new info", c.At, c.Node)
	}
	return fmt.Sprintf("%s node %s: %s", c.At, c.Node, c.Kind)
}

// Machine is the pure heartbeat state machine. It is not safe for
// concurrent use; the Service serializes calls.
type Machine struct {
	cfg      Config
	bootID   uint64
	now      time.Duration
	nextSend [MaxLinks]time.Duration
	peers    map[string]*peer
	names    []string // sorted peer names
	info     []byte
	changes  []Change
}

type peer struct {
	name       string
	links      []*link // by index; nil where the peer has no such link
	status     NodeStatus
	bootID     uint64
	lastHeard  time.Duration
	firstHeard time.Duration
	restarts   int
	info       []byte

	// Per incarnation of the peer: the heartbeat whose info is kept, and
	// the newest echo addressed to us.
	infoSet     bool
	infoSend    time.Duration
	infoHasEcho bool
	infoEcho    time.Duration
	hasEcho     bool
	echo        time.Duration
}

type link struct {
	addr  string
	since time.Duration // when this link was configured

	// Inbound, reset on a new incarnation of the peer (but status and
	// lastHeard carry over: they are about the path, not the process).
	status    LinkStatus
	lastHeard time.Duration
	highest   uint64 // newest seq; 0 = none yet
	first     uint64 // first seq seen of this incarnation
	window    uint64 // bit d set: seq highest-d was received
	received  uint64
	hearsUs   bool
	echoOK    bool
	echoTime  time.Duration // peer's SendTime of the newest heartbeat
	echoAt    time.Duration // when we got it
	rtt, last time.Duration

	// Outbound.
	seq uint64
}

// New returns a Machine for cfg. bootID names this incarnation and must be
// non-zero and larger than any earlier incarnation of the same node (peers
// ignore heartbeats with a smaller BootID than the newest they saw): use
// the wall clock in nanoseconds at start-up, or a counter persisted on disk,
// or the larger of both.
func New(cfg Config, bootID uint64) (*Machine, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if bootID == 0 {
		return nil, errors.New("membership: boot ID must not be 0")
	}
	m := &Machine{cfg: cfg, bootID: bootID, peers: map[string]*peer{}}
	m.setPeers(cfg.Peers)
	return m, nil
}

// Config returns the configuration with defaults applied.
func (m *Machine) Config() Config { return m.cfg }

// Now returns the Machine's time: the latest now passed to Tick or
// Receive.
func (m *Machine) Now() time.Duration { return m.now }

// BootID returns this incarnation's boot ID.
func (m *Machine) BootID() uint64 { return m.bootID }

// SetInfo sets the payload carried by the heartbeats emitted from now on.
func (m *Machine) SetInfo(info []byte) error {
	if len(info) > MaxInfo {
		return fmt.Errorf("membership: info of %d bytes exceeds %d", len(info), MaxInfo)
	}
	m.info = bytes.Clone(info)
	return nil
}

// SetPeers replaces the peer list (a node joined or left). Peers already
// known keep all their state, links included, even if an address changed;
// removed peers are forgotten; new peers start unknown. No Change is
// reported: the caller made the change.
func (m *Machine) SetPeers(peers []Peer) error {
	if err := validatePeers(m.cfg.Self, m.cfg.SelfLinks, peers); err != nil {
		return err
	}
	m.cfg.Peers = slices.Clone(peers)
	m.setPeers(peers)
	return nil
}

func (m *Machine) setPeers(peers []Peer) {
	next := make(map[string]*peer, len(peers))
	for _, pc := range peers {
		p := m.peers[pc.Name]
		if p == nil {
			p = &peer{name: pc.Name}
		}
		links := make([]*link, len(pc.Links))
		for i, a := range pc.Links {
			if a == "" {
				continue
			}
			var l *link
			if i < len(p.links) {
				l = p.links[i]
			}
			if l == nil {
				l = &link{since: m.now}
			}
			l.addr = a
			links[i] = l
		}
		p.links = links
		next[pc.Name] = p
	}
	m.peers = next
	m.names = m.names[:0]
	for n := range next {
		m.names = append(m.names, n)
	}
	slices.Sort(m.names)
}

// commonLink returns the link i to p if both ends have it.
func (m *Machine) commonLink(p *peer, i int) *link {
	if i < 0 || i >= m.cfg.SelfLinks || i >= len(p.links) {
		return nil
	}
	return p.links[i]
}

// advance moves the clock; time never goes back (a smaller now is taken
// as the current time).
func (m *Machine) advance(now time.Duration) {
	if now > m.now {
		m.now = now
	}
}

// Tick advances time to now, updates link and node states (reporting
// Changes) and returns the heartbeats due: on each link whose period is up,
// one to every peer sharing that link. now is a monotonic offset, e.g.
// time.Since(start); call Tick several times per Interval (the Service
// uses Interval/4) since timeouts are noticed only here.
func (m *Machine) Tick(now time.Duration) []Outgoing {
	m.advance(now)
	now = m.now
	for _, name := range m.names {
		m.evaluate(m.peers[name])
	}
	var out []Outgoing
	for i := 0; i < m.cfg.SelfLinks; i++ {
		if now < m.nextSend[i] {
			continue
		}
		m.nextSend[i] += m.cfg.Interval
		if m.nextSend[i] <= now {
			// Late (a stalled process): do not burst to catch up.
			m.nextSend[i] = now + m.cfg.Interval
		}
		for _, name := range m.names {
			p := m.peers[name]
			l := m.commonLink(p, i)
			if l == nil {
				continue
			}
			l.seq++
			hb := Heartbeat{
				From:     m.cfg.Self,
				To:       p.name,
				Link:     i,
				BootID:   m.bootID,
				Seq:      l.seq,
				SendTime: now,
				Info:     m.info,
			}
			if l.echoOK {
				// ToBoot only from what this link carried, so that the
				// peer learns whether this very link works both ways.
				hb.ToBoot = p.bootID
				hb.HasEcho = true
				hb.EchoTime = l.echoTime
				hb.EchoHold = now - l.echoAt
			}
			out = append(out, Outgoing{Link: i, Addr: l.addr, Msg: hb})
		}
	}
	return out
}

// evaluate applies the timeouts to p at m.now.
func (m *Machine) evaluate(p *peer) {
	now := m.now
	if p.status == StatusUnknown {
		return
	}
	for i, l := range p.links {
		if l == nil || m.commonLink(p, i) == nil {
			continue
		}
		switch {
		case l.status == LinkUp && now-l.lastHeard >= m.cfg.LinkTimeout:
			m.setLink(p, i, l, LinkDown)
		case l.status == LinkUnknown && now-max(l.since, p.firstHeard) >= m.cfg.LinkTimeout:
			// The node speaks, but never on this link: report it down
			// rather than leave a broken link unknown forever.
			m.setLink(p, i, l, LinkDown)
		}
	}
	silence := now - p.lastHeard
	st := StatusMember
	switch {
	case silence >= m.cfg.NodeTimeout:
		st = StatusLost
	case silence >= m.cfg.SuspectTimeout:
		st = StatusSuspect
	}
	m.setNode(p, st)
}

func (m *Machine) setLink(p *peer, i int, l *link, st LinkStatus) {
	if l.status == st {
		return
	}
	m.changes = append(m.changes, Change{At: m.now, Kind: ChangeLink, Node: p.name, Link: i,
		LinkFrom: l.status, LinkTo: st, LastHeard: l.lastHeard})
	l.status = st
}

func (m *Machine) setNode(p *peer, st NodeStatus) {
	if p.status == st {
		return
	}
	m.changes = append(m.changes, Change{At: m.now, Kind: ChangeNode, Node: p.name, Link: -1,
		From: p.status, To: st, LastHeard: p.lastHeard})
	p.status = st
}

// Receive hands the Machine a decoded, authenticated heartbeat that
// arrived on link at time now. It returns nil if the heartbeat was
// accepted, or why it was dropped: ErrNotForMe, ErrUnknownPeer, ErrBadLink
// (the sender has no such link, or it arrived on another link than it was
// sent on: cross-wired networks), ErrStaleBoot (an older incarnation of the
// sender) or ErrReplay (a sequence number seen before or older than the
// replay window). A dropped heartbeat changes nothing.
//
// A heartbeat older than the newest one on its link but inside the window
// and not seen before (reordering) counts for the loss estimate but does
// not refresh liveness: it proves nothing the newer one did not.
func (m *Machine) Receive(now time.Duration, link int, msg Heartbeat) error {
	m.advance(now)
	now = m.now
	if msg.To != m.cfg.Self {
		return ErrNotForMe
	}
	p := m.peers[msg.From]
	if p == nil {
		return ErrUnknownPeer
	}
	l := m.commonLink(p, link)
	if l == nil || msg.Link != link {
		return ErrBadLink
	}
	if msg.BootID == 0 || msg.BootID < p.bootID {
		return ErrStaleBoot
	}
	if msg.Seq == 0 {
		return ErrReplay
	}
	if msg.BootID > p.bootID {
		if p.bootID != 0 {
			p.restarts++
			m.changes = append(m.changes, Change{At: now, Kind: ChangeRestart, Node: p.name, Link: -1,
				BootID: msg.BootID, PrevBootID: p.bootID})
		}
		p.bootID = msg.BootID
		p.infoSet, p.infoHasEcho, p.hasEcho = false, false, false
		p.infoSend, p.infoEcho, p.echo = 0, 0, 0
		for _, l := range p.links {
			if l != nil {
				l.resetIncarnation()
			}
		}
	}

	if msg.Seq <= l.highest {
		d := l.highest - msg.Seq
		if d >= LossWindow || l.window&(1<<d) != 0 {
			return ErrReplay
		}
		l.window |= 1 << d
		l.received++
		return nil
	}
	if l.highest == 0 {
		l.first, l.window = msg.Seq, 1
	} else if shift := msg.Seq - l.highest; shift >= LossWindow {
		l.window = 1
	} else {
		l.window = l.window<<shift | 1
	}
	l.highest = msg.Seq
	l.received++

	if p.status == StatusUnknown {
		p.firstHeard = now
	}
	l.lastHeard = now
	p.lastHeard = now
	l.echoOK, l.echoTime, l.echoAt = true, msg.SendTime, now
	l.hearsUs = msg.ToBoot == m.bootID
	if msg.HasEcho && msg.ToBoot == m.bootID && msg.EchoTime <= now {
		if rtt := now - msg.EchoTime - msg.EchoHold; rtt >= 0 {
			l.last = rtt
			if l.rtt == 0 {
				l.rtt = rtt
			} else {
				l.rtt += (rtt - l.rtt) / 8
			}
		}
	}
	m.setLink(p, link, l, LinkUp)
	m.setNode(p, StatusMember)
	// The echo counts only when it is addressed to this incarnation (our
	// earlier incarnations' send times mean nothing on our clock) and is
	// not from the future.
	echoed := msg.HasEcho && msg.ToBoot == m.bootID && msg.EchoTime <= now
	if echoed && (!p.hasEcho || msg.EchoTime > p.echo) {
		p.hasEcho, p.echo = true, msg.EchoTime
	}
	// Heartbeats race each other on different links: keep the Info of the
	// one sent last, not of the one that arrived last.
	if !p.infoSet || msg.SendTime > p.infoSend {
		p.infoSet, p.infoSend = true, msg.SendTime
		p.infoHasEcho, p.infoEcho = echoed, 0
		if echoed {
			p.infoEcho = msg.EchoTime
		}
		if !bytes.Equal(p.info, msg.Info) {
			p.info = bytes.Clone(msg.Info)
			m.changes = append(m.changes, Change{At: now, Kind: ChangeInfo, Node: p.name, Link: -1})
		}
	}
	return nil
}

func (l *link) resetIncarnation() {
	l.highest, l.first, l.window, l.received = 0, 0, 0, 0
	l.hearsUs, l.echoOK = false, false
	l.rtt, l.last = 0, 0
}

// loss estimates the fraction of heartbeats lost among the last
// LossWindow sequence numbers.
func (l *link) loss() float64 {
	if l.highest == 0 {
		return 0
	}
	span := l.highest - l.first + 1
	mask := ^uint64(0)
	if span < LossWindow {
		mask = 1<<span - 1
	} else {
		span = LossWindow
	}
	got := bits.OnesCount64(l.window & mask)
	return 1 - float64(got)/float64(span)
}

// Changes returns the transitions since the last call, oldest first, and
// forgets them. Call it after every Tick and Receive: they pile up until
// then.
func (m *Machine) Changes() []Change {
	c := m.changes
	m.changes = nil
	return c
}

// Nodes returns the state of every peer (not self) sorted by name, as of
// the latest Tick or Receive.
func (m *Machine) Nodes() []NodeState {
	out := make([]NodeState, 0, len(m.names))
	for _, name := range m.names {
		out = append(out, m.nodeState(m.peers[name]))
	}
	return out
}

// Node returns the state of one peer.
func (m *Machine) Node(name string) (NodeState, bool) {
	p := m.peers[name]
	if p == nil {
		return NodeState{}, false
	}
	return m.nodeState(p), true
}

func (m *Machine) nodeState(p *peer) NodeState {
	ns := NodeState{
		Name:      p.name,
		Status:    p.status,
		BootID:    p.bootID,
		LastHeard: p.lastHeard,
		Restarts:  p.restarts,
		Info:      bytes.Clone(p.info),
		InfoSend:  p.infoSend,
		HasEcho:   p.hasEcho,
		Echo:      p.echo,
	}
	if p.infoHasEcho {
		ns.InfoHasEcho, ns.InfoEcho = true, p.infoEcho
	}
	for i, l := range p.links {
		if m.commonLink(p, i) == nil {
			continue
		}
		ns.Links = append(ns.Links, LinkState{
			Index:     i,
			Addr:      l.addr,
			Status:    l.status,
			LastHeard: l.lastHeard,
			RTT:       l.rtt,
			LastRTT:   l.last,
			Loss:      l.loss(),
			Received:  l.received,
			HearsUs:   l.hearsUs,
		})
	}
	return ns
}

// String renders a NodeState on one line, for logs and tests.
func (n NodeState) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s boot=%#x heard=%s", n.Name, n.Status, n.BootID, n.LastHeard)
	for _, l := range n.Links {
		fmt.Fprintf(&b, " [%d %s rtt=%s loss=%.2f]", l.Index, l.Status, l.RTT, l.Loss)
	}
	return b.String()
}
