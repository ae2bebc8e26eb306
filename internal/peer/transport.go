// Package peer carries raft messages between nodes.
//
// Each node keeps one long-lived HTTP/2 stream to every peer it talks to: a
// POST to StreamPath on the peer's HTTPS listener, over mutual TLS with
// certificates of the cluster CA (package pki), whose request body is a
// sequence of frames (see frame.go). Messages to one peer go in order on one
// stream. Sending never blocks the caller: every peer has a bounded queue and
// its own sender goroutine; when the queue is full, messages are dropped and
// counted, which raft tolerates.
//
// A peer has one address per link, in the order the Resolver gives
// (preferred first). On a dial or stream error the sender tries the next
// address at once, so losing one link costs one failover, not a backoff; when
// every address failed, it backs off briefly, asks the Resolver again and
// retries. While streaming over a less preferred link, it checks now and then
// whether the preferred one answers again, and moves back if so.
package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// StreamPath is where the agent mounts Handler on its HTTPS server.
const StreamPath = "/raft/v1/stream"

// Request headers of a stream.
const (
	HeaderFrom = "Vigil-Raft-From" // sender's node ID, decimal
	HeaderTo   = "Vigil-Raft-To"   // receiver's node ID, decimal
)

const contentType = "application/vnd.vigil.raft-frames"

// Defaults and tuning. Timings are for a LAN: raft ticks are ~100 ms.
const (
	DefaultDialTimeout = 500 * time.Millisecond
	DefaultQueueSize   = 4096

	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
	// stableStream is how long a stream must have lived for the next
	// failure round to start at minBackoff again.
	stableStream = 5 * time.Second
	// failbackEvery is how often a sender on a less preferred link checks
	// the preferred one.
	failbackEvery = 3 * time.Second
	// maxBatch caps the bytes gathered into one write to a stream.
	maxBatch = 1 << 20
	// keepWriteBuf caps the write buffer kept between batches.
	keepWriteBuf = 4 << 20
	// pingEvery and pingTimeout bound how long a stream over a dead link
	// (no RST, just silence) stays unnoticed.
	pingEvery   = time.Second
	pingTimeout = time.Second
	// writeTimeout fails a connection whose writes make no progress.
	writeTimeout = 2 * time.Second
)

// Resolver gives the addresses of a node.
type Resolver interface {
	// PeerAddrs returns one "host:port" per link of node, in order of
	// preference (the agent puts links that are up first). It is called
	// from sender goroutines and must be safe for concurrent use.
	PeerAddrs(node uint64) []string
}

// Config configures a Transport.
type Config struct {
	// Self is this node's raft ID; SelfName its name (for logs).
	Self     uint64
	SelfName string
	// TLS is the client-side configuration for dialing peers, presenting
	// this node's certificate: pki.ClientTLS(ca, &cert, "").
	TLS *tls.Config
	// Resolver gives peers' addresses.
	Resolver Resolver
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// DialTimeout bounds a TCP connect and, separately, a TLS handshake;
	// the stream must be accepted within 3×DialTimeout. Default 500 ms.
	DialTimeout time.Duration
	// QueueSize is the number of messages queued per peer before Send
	// drops. Default 4096.
	QueueSize int
	// Authorize, if set, decides whether a client certificate named
	// certName may send as raft node fromID. Without it, any certificate
	// of the cluster CA may claim any ID.
	Authorize func(certName string, fromID uint64) bool
}

// SnapshotReport tells the sender's store what became of a MsgSnap, for
// raft's ReportSnapshot: Failed means it was dropped or its stream broke
// while writing it. !Failed means it was written to the stream, not that the
// peer applied it.
type SnapshotReport struct {
	To     uint64
	Failed bool
}

// PeerStats describes the stream to one peer.
type PeerStats struct {
	Node      uint64
	Addr      string // the address streamed to, "" if none
	Connected bool
	Sent      uint64 // messages written to a stream
	Dropped   uint64 // messages dropped (queue full, stream broken, encoding)
}

// Transport sends raft messages to peers and receives them (Handler).
type Transport struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	conns  connTracker

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	// failbackEvery is the constant of that name; tests shorten it.
	failbackEvery time.Duration

	unreachable chan uint64
	snapshots   chan SnapshotReport
	dropped     atomic.Uint64

	mu       sync.RWMutex
	closed   bool
	peers    map[uint64]*peer
	senders  sync.WaitGroup // peer.run goroutines
	handlers sync.WaitGroup // running Handler requests
}

// New returns a Transport. It panics on a Config without Self, TLS or
// Resolver: a programmer error.
func New(cfg Config) *Transport {
	switch {
	case cfg.Self == 0:
		panic("peer: Config.Self is 0")
	case cfg.TLS == nil:
		panic("peer: Config.TLS is nil")
	case cfg.Resolver == nil:
		panic("peer: Config.Resolver is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	t := &Transport{
		cfg:           cfg,
		failbackEvery: failbackEvery,
		log:           cfg.Logger.With("component", "peer", "self", cfg.Self),
		unreachable:   make(chan uint64, 64),
		snapshots:     make(chan SnapshotReport, 16),
		peers:         make(map[uint64]*peer),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 5 * time.Second}
	var protos http.Protocols
	protos.SetHTTP2(true) // the stream needs a full-duplex request body
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return t.conns.add(c), nil
		},
		TLSClientConfig:        cfg.TLS,
		TLSHandshakeTimeout:    cfg.DialTimeout,
		ForceAttemptHTTP2:      true,
		Protocols:              &protos,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 16 << 10,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:  pingEvery,
			PingTimeout:      pingTimeout,
			WriteByteTimeout: writeTimeout,
		},
	}
	t.client = &http.Client{Transport: tr} // no Timeout: streams live long
	return t
}

// Send queues msgs for their peers (m.To) and returns at once. A message
// for a peer whose queue is full is dropped and counted. The caller must not
// modify the messages afterwards. Messages to 0 or to Self are ignored.
func (t *Transport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		to := m.GetTo()
		if to == 0 || to == t.cfg.Self {
			t.log.Debug("raft message to self or to node 0 ignored", "to", to, "type", m.GetType())
			continue
		}
		p := t.peer(to)
		if p == nil {
			return // closed
		}
		select {
		case p.queue <- m:
		default:
			p.drop("queue full", m)
		}
	}
}

// peer returns the sender for node, starting it if needed; nil once closed.
func (t *Transport) peer(node uint64) *peer {
	t.mu.RLock()
	p, closed := t.peers[node], t.closed
	t.mu.RUnlock()
	if p != nil || closed {
		return p
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	if p = t.peers[node]; p == nil {
		p = newPeer(t, node)
		t.peers[node] = p
		t.senders.Add(1)
		go p.run()
	}
	return p
}

// Remove stops the sender for node (removed from the cluster) and drops
// what it had queued. A later Send to node starts a new one.
func (t *Transport) Remove(node uint64) {
	t.mu.Lock()
	p := t.peers[node]
	delete(t.peers, node)
	t.mu.Unlock()
	if p != nil {
		p.stop()
		<-p.done
	}
}

// Unreachable delivers IDs of peers that a message may have been lost to
// (dial or stream failure, queue full), for raft's ReportUnreachable. IDs
// repeat; reports are dropped when the channel is full, so a slow reader
// misses some, which raft tolerates.
func (t *Transport) Unreachable() <-chan uint64 { return t.unreachable }

// Snapshots delivers the fate of MsgSnap messages, for raft's
// ReportSnapshot. Reports are dropped when the channel is full.
func (t *Transport) Snapshots() <-chan SnapshotReport { return t.snapshots }

// Dropped returns how many messages were dropped since New, all peers.
func (t *Transport) Dropped() uint64 { return t.dropped.Load() }

// Stats returns the state of the stream to every peer sent to.
func (t *Transport) Stats() []PeerStats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]PeerStats, 0, len(t.peers))
	for _, p := range t.peers {
		out = append(out, p.stats())
	}
	return out
}

// Close stops all senders, ends the streams of running Handlers, waits for
// them and closes all connections. Send after Close does nothing; Handler
// requests after Close are refused with 503.
func (t *Transport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	peers := t.peers
	t.peers = nil
	t.mu.Unlock()

	t.cancel()
	for _, p := range peers {
		p.stop()
	}
	t.senders.Wait()
	t.handlers.Wait()
	t.client.CloseIdleConnections()
	t.conns.closeAll()
}

func (t *Transport) reportUnreachable(node uint64) {
	select {
	case t.unreachable <- node:
	default:
	}
}

func (t *Transport) reportSnapshot(to uint64, failed bool) {
	select {
	case t.snapshots <- SnapshotReport{To: to, Failed: failed}:
	default:
		t.log.Warn("snapshot report dropped: nobody reads Snapshots()", "to", to, "failed", failed)
	}
}

// connTracker remembers the connections dialed, so that Close can end them
// all, whatever state the HTTP/2 client keeps them in.
type connTracker struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	tr   *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.tr.mu.Lock()
		delete(c.tr.conns, c)
		c.tr.mu.Unlock()
	})
	return err
}

func (ct *connTracker) add(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, tr: ct}
	ct.mu.Lock()
	if ct.conns == nil {
		ct.conns = make(map[*trackedConn]struct{})
	}
	ct.conns[tc] = struct{}{}
	ct.mu.Unlock()
	return tc
}

func (ct *connTracker) closeAll() {
	ct.mu.Lock()
	conns := make([]*trackedConn, 0, len(ct.conns))
	for c := range ct.conns {
		conns = append(conns, c)
	}
	ct.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

var errClosed = errors.New("peer: transport closed")
