package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Machine configures the heartbeat machine; Machine.SelfLinks must equal
	// len(Listen).
	Machine Config
	// BootID names this incarnation; see New.
	BootID uint64
	// ClusterID names the cluster; packets of other clusters are dropped.
	ClusterID string
	// Key authenticates heartbeats (HMAC-SHA256), at least 16 bytes. Derive
	// it from the cluster key for this purpose only.
	Key []byte
	// Listen is the local UDP address ("host:port") of each link. Port 0
	// binds a free port; LocalAddrs tells which.
	Listen []string
	// Logger receives warnings and state changes; nil discards them.
	Logger *slog.Logger
	// SubscriberBuffer is the channel capacity of each Subscribe (default
	// 1024).
	SubscriberBuffer int
}

// Counters counts packets by fate. Each drop reason has its own counter so
// that an operator can tell a wrong key from a replay from a stale node.
type Counters struct {
	Sent       uint64 // heartbeats sent
	SendErrors uint64 // heartbeats that could not be sent
	ReadErrors uint64 // socket read errors
	Accepted   uint64 // heartbeats the machine accepted

	// Dropped by Decode.
	Short        uint64
	NotHeartbeat uint64
	Version      uint64
	WrongCluster uint64
	BadMAC       uint64
	Malformed    uint64

	// Dropped by Machine.Receive.
	NotForMe    uint64
	UnknownPeer uint64
	BadLink     uint64
	StaleBoot   uint64
	Replay      uint64

	// ChangesDropped counts Changes not delivered to a full subscriber.
	ChangesDropped uint64
}

// warnEvery is the least time between two warnings of one kind about one
// source address: a misconfigured node beats five times a second per link,
// and one line every few seconds says enough.
const warnEvery = 10 * time.Second

// Service runs a Machine over UDP: one socket per link of self, the real
// monotonic clock, and fan-out of Changes to subscribers. It is safe for
// concurrent use.
type Service struct {
	key       []byte
	clusterID string
	conns     []*net.UDPConn
	start     time.Time
	log       *slog.Logger
	subBuf    int
	tickEvery time.Duration

	mu       sync.Mutex
	m        *Machine
	counters Counters
	subs     map[int]chan Change
	nextSub  int
	started  bool
	stopped  bool // subscriber channels closed
	cancel   context.CancelFunc
	warned   map[string]warnState

	wg        sync.WaitGroup
	closeOnce sync.Once
}

type warnState struct {
	at         time.Time
	suppressed int
}

// NewService validates cfg and binds the link sockets. Nothing is sent
// before Start, so that a caller binding port 0 can learn the addresses
// first.
func NewService(cfg ServiceConfig) (*Service, error) {
	if len(cfg.Key) < 16 {
		return nil, errors.New("membership: heartbeat key must be at least 16 bytes")
	}
	if len(cfg.Listen) != cfg.Machine.SelfLinks {
		return nil, fmt.Errorf("membership: %d listen addresses for %d links", len(cfg.Listen), cfg.Machine.SelfLinks)
	}
	m, err := New(cfg.Machine, cfg.BootID)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		key:       append([]byte(nil), cfg.Key...),
		clusterID: cfg.ClusterID,
		start:     time.Now(),
		log:       log.With("component", "membership"),
		subBuf:    cfg.SubscriberBuffer,
		tickEvery: max(m.Config().Interval/4, time.Millisecond),
		m:         m,
		subs:      map[int]chan Change{},
		warned:    map[string]warnState{},
	}
	if s.subBuf <= 0 {
		s.subBuf = 1024
	}
	for i, a := range cfg.Listen {
		ua, err := net.ResolveUDPAddr("udp", a)
		if err == nil {
			var c *net.UDPConn
			c, err = net.ListenUDP("udp", ua)
			if err == nil {
				s.conns = append(s.conns, c)
				continue
			}
		}
		s.closeConns()
		return nil, fmt.Errorf("membership: link %d: listen %s: %w", i, a, err)
	}
	return s, nil
}

// LocalAddrs returns the bound address of each link socket.
func (s *Service) LocalAddrs() []string {
	out := make([]string, len(s.conns))
	for i, c := range s.conns {
		out[i] = c.LocalAddr().String()
	}
	return out
}

// Start starts sending and receiving. It stops when ctx is done or Close is
// called. It fails if called twice or after Close.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("membership: service already started or closed")
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(1 + len(s.conns))
	go s.run(ctx)
	for i, c := range s.conns {
		go s.read(ctx, i, c)
	}
	return nil
}

// Close stops the service and waits for its goroutines. Subscriber channels
// are closed. It is safe to call more than once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		cancel := s.cancel
		started := s.started
		s.mu.Unlock()
		if started {
			cancel()
		} else {
			s.closeConns()
			s.stop()
		}
	})
	s.wg.Wait()
	return nil
}

func (s *Service) closeConns() {
	for _, c := range s.conns {
		c.Close()
	}
}

// stop closes subscriber channels once.
func (s *Service) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	for id, ch := range s.subs {
		close(ch)
		delete(s.subs, id)
	}
}

func (s *Service) now() time.Duration { return time.Since(s.start) }

// Now returns the monotonic offset the machine runs on: the clock of every
// SendTime this node sends, of the echoes it gets back (NodeState.Echo,
// InfoEcho) and of LastHeard. Time read from it never goes back.
func (s *Service) Now() time.Duration { return s.now() }

// run ticks the machine at a fraction of the interval, so that heartbeats
// leave and timeouts are noticed within Interval/4 of being due.
func (s *Service) run(ctx context.Context) {
	defer s.wg.Done()
	defer s.stop()
	// Closing the sockets unblocks the readers.
	defer s.closeConns()
	t := time.NewTicker(s.tickEvery)
	defer t.Stop()
	addrs := map[string]*net.UDPAddr{}
	for {
		s.mu.Lock()
		out := s.m.Tick(s.now())
		changes := s.publishLocked()
		s.mu.Unlock()
		s.logChanges(changes)
		s.send(out, addrs)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) send(out []Outgoing, addrs map[string]*net.UDPAddr) {
	var sent, failed uint64
	for _, o := range out {
		pkt, err := Encode(s.key, s.clusterID, o.Msg)
		var ua *net.UDPAddr
		if err == nil {
			ua = addrs[o.Addr]
			if ua == nil {
				// NB: resolved once per address; a host name that moves
				// needs SetPeers with the new address.
				ua, err = net.ResolveUDPAddr("udp", o.Addr)
				if err == nil {
					addrs[o.Addr] = ua
				}
			}
		}
		if err == nil {
			_, err = s.conns[o.Link].WriteToUDP(pkt, ua)
		}
		if err != nil {
			failed++
			s.warn("send", o.Addr, "cannot send heartbeat", "node", o.Msg.To, "link", o.Link, "addr", o.Addr, "err", err)
			continue
		}
		sent++
	}
	s.mu.Lock()
	s.counters.Sent += sent
	s.counters.SendErrors += failed
	s.mu.Unlock()
}

func (s *Service) read(ctx context.Context, link int, c *net.UDPConn) {
	defer s.wg.Done()
	buf := make([]byte, MaxPacket+1)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			s.counters.ReadErrors++
			s.mu.Unlock()
			s.warn("read", "", "heartbeat socket read failed", "link", link, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		s.handle(link, from.String(), buf[:n])
	}
}

// handle decodes and applies one packet from addr on link.
func (s *Service) handle(link int, addr string, pkt []byte) {
	msg, err := Decode(s.key, s.clusterID, pkt)
	if err != nil {
		s.mu.Lock()
		s.countDecodeLocked(err)
		s.mu.Unlock()
		s.warnDecode(link, addr, err)
		return
	}
	s.mu.Lock()
	err = s.m.Receive(s.now(), link, msg)
	s.countReceiveLocked(err)
	changes := s.publishLocked()
	s.mu.Unlock()
	s.logChanges(changes)
	if err != nil {
		s.warnReceive(link, addr, msg, err)
	}
}

func (s *Service) countDecodeLocked(err error) {
	c := &s.counters
	switch {
	case errors.Is(err, ErrShort):
		c.Short++
	case errors.Is(err, ErrMagic):
		c.NotHeartbeat++
	case errors.Is(err, ErrVersion):
		c.Version++
	case errors.Is(err, ErrWrongCluster):
		c.WrongCluster++
	case errors.Is(err, ErrBadMAC):
		c.BadMAC++
	default:
		c.Malformed++
	}
}

func (s *Service) countReceiveLocked(err error) {
	c := &s.counters
	switch {
	case err == nil:
		c.Accepted++
	case errors.Is(err, ErrNotForMe):
		c.NotForMe++
	case errors.Is(err, ErrUnknownPeer):
		c.UnknownPeer++
	case errors.Is(err, ErrBadLink):
		c.BadLink++
	case errors.Is(err, ErrStaleBoot):
		c.StaleBoot++
	case errors.Is(err, ErrReplay):
		c.Replay++
	}
}

// warnDecode says why a packet was dropped, and from where: that is how
// an operator learns why a node with a wrong key does not join.
func (s *Service) warnDecode(link int, addr string, err error) {
	var msg string
	switch {
	case errors.Is(err, ErrBadMAC):
		msg = "heartbeat failed authentication: the sender has another cluster key, or the packet was forged or corrupted"
	case errors.Is(err, ErrWrongCluster):
		msg = "heartbeat from another cluster on this link: check the cluster ID and addresses"
	case errors.Is(err, ErrVersion):
		msg = "heartbeat in an unknown format version: is the sender a newer release?"
	default:
		msg = "undecodable packet on the heartbeat port"
	}
	s.warn(err.Error(), addr, msg, "from", addr, "link", link, "err", err)
}

func (s *Service) warnReceive(link int, addr string, hb Heartbeat, err error) {
	var msg string
	switch {
	case errors.Is(err, ErrUnknownPeer):
		msg = "heartbeat from a node not in the configuration"
	case errors.Is(err, ErrNotForMe):
		msg = "heartbeat addressed to another node: two nodes share an address?"
	case errors.Is(err, ErrBadLink):
		msg = "heartbeat on the wrong link: are the link networks cross-wired?"
	case errors.Is(err, ErrStaleBoot):
		msg = "heartbeat from an older incarnation ignored: did the node's boot ID go backwards (clock set back)?"
	case errors.Is(err, ErrReplay):
		msg = "heartbeat replayed or duplicated, ignored"
	default:
		msg = "heartbeat dropped"
	}
	s.warn(err.Error(), addr, msg, "from", addr, "node", hb.From, "to", hb.To, "link", link, "sent_on_link", hb.Link, "boot", hb.BootID)
}

// warn logs msg at most once per warnEvery for each (kind, addr), with the
// number of repeats suppressed since the last line.
func (s *Service) warn(kind, addr, msg string, args ...any) {
	now := time.Now()
	key := kind + "|" + addr
	s.mu.Lock()
	w, ok := s.warned[key]
	if ok && now.Sub(w.at) < warnEvery {
		w.suppressed++
		s.warned[key] = w
		s.mu.Unlock()
		return
	}
	if len(s.warned) >= 1024 {
		clear(s.warned) // bounded: a flood of spoofed source addresses must not grow it
	}
	s.warned[key] = warnState{at: now}
	s.mu.Unlock()
	if w.suppressed > 0 {
		args = append(args, "suppressed", w.suppressed)
	}
	s.log.Warn(msg, args...)
}

// publishLocked drains the machine's changes and offers them to every
// subscriber without blocking. Done under s.mu, so subscribers see changes
// in order.
func (s *Service) publishLocked() []Change {
	changes := s.m.Changes()
	for _, c := range changes {
		for _, ch := range s.subs {
			select {
			case ch <- c:
			default:
				s.counters.ChangesDropped++
			}
		}
	}
	return changes
}

func (s *Service) logChanges(changes []Change) {
	for _, c := range changes {
		switch {
		case c.Kind == ChangeNode && (c.To == StatusLost || c.To == StatusSuspect):
			s.log.Warn("node "+c.To.String(), "node", c.Node, "from", c.From.String(), "silent_for", c.At-c.LastHeard)
		case c.Kind == ChangeNode:
			s.log.Info("node "+c.To.String(), "node", c.Node, "from", c.From.String())
		case c.Kind == ChangeLink && c.LinkTo == LinkDown:
			s.log.Warn("link down", "node", c.Node, "link", c.Link, "silent_for", c.At-c.LastHeard)
		case c.Kind == ChangeLink:
			s.log.Info("link "+c.LinkTo.String(), "node", c.Node, "link", c.Link)
		case c.Kind == ChangeRestart:
			s.log.Warn("node restarted", "node", c.Node, "boot", c.BootID, "prev_boot", c.PrevBootID)
		}
	}
}

// Subscribe returns a channel of Changes, in order, from now on, and a
// function to unsubscribe. Delivery never blocks the service: if the
// channel is full a Change is dropped and counted in
// Counters.ChangesDropped, after which the subscriber should resync with
// Snapshot. The channel is closed when the service stops.
func (s *Service) Subscribe() (<-chan Change, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan Change, s.subBuf)
	if s.stopped {
		close(ch)
		return ch, func() {}
	}
	id := s.nextSub
	s.nextSub++
	s.subs[id] = ch
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c, ok := s.subs[id]; ok {
			close(c)
			delete(s.subs, id)
		}
	}
}

// Snapshot returns the state of every peer, sorted by name.
func (s *Service) Snapshot() []NodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.Nodes()
}

// Node returns the state of one peer.
func (s *Service) Node(name string) (NodeState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.Node(name)
}

// SetPeers changes the peer list; see Machine.SetPeers.
func (s *Service) SetPeers(peers []Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.SetPeers(peers)
}

// SetInfo sets the payload of the heartbeats sent from now on.
func (s *Service) SetInfo(info []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.SetInfo(info)
}

// Counters returns a copy of the packet counters.
func (s *Service) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}
