package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// ErrRefused is returned (and logged) when a peer answers a stream request
// with an error status: wrong node at that address, certificate not
// accepted, transport closed.
var ErrRefused = errors.New("peer: stream refused")

var errStreamEnded = errors.New("peer: stream ended by the receiver")

// peer is the sender side towards one node: a queue and the goroutine (run)
// that owns the stream.
type peer struct {
	t     *Transport
	id    uint64
	queue chan *raftpb.Message

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	sent, dropped atomic.Uint64
	warnedDrop    atomic.Bool // a drop was logged since the last connect

	mu        sync.Mutex
	addr      string
	connected bool
}

func newPeer(t *Transport, id uint64) *peer {
	p := &peer{t: t, id: id, queue: make(chan *raftpb.Message, t.cfg.QueueSize), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	return p
}

func (p *peer) stop() { p.cancel() }

func (p *peer) stats() PeerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PeerStats{Node: p.id, Addr: p.addr, Connected: p.connected, Sent: p.sent.Load(), Dropped: p.dropped.Load()}
}

func (p *peer) setStream(addr string, up bool) {
	p.mu.Lock()
	p.addr, p.connected = addr, up
	p.mu.Unlock()
	if up {
		p.warnedDrop.Store(false)
	}
}

// drop counts messages lost before reaching a stream and reports them.
func (p *peer) drop(why string, msgs ...*raftpb.Message) {
	if len(msgs) == 0 {
		return
	}
	p.dropped.Add(uint64(len(msgs)))
	p.t.dropped.Add(uint64(len(msgs)))
	for _, m := range msgs {
		if m.GetType() == raftpb.MsgSnap {
			p.t.reportSnapshot(p.id, true)
		}
	}
	p.t.reportUnreachable(p.id)
	if !p.warnedDrop.Swap(true) {
		p.t.log.Warn("raft messages to peer dropped", "to", p.id, "why", why, "count", len(msgs), "type", msgs[0].GetType())
	}
}

// run owns the stream to the peer until the transport closes or the peer is
// removed.
func (p *peer) run() {
	defer p.t.senders.Done()
	defer close(p.done)
	defer p.drain()
	log := p.t.log.With("to", p.id)
	backoff := minBackoff
	wasUp := false // a stream worked since the last "unreachable" warning
	for {
		addrs := p.t.cfg.Resolver.PeerAddrs(p.id)
		lived := false // a stream of this round worked for a while
		for _, addr := range addrs {
			s, err := p.t.open(p.ctx, p.id, addr)
			if p.ctx.Err() != nil {
				return
			}
			if err != nil {
				lvl := slog.LevelDebug
				if errors.Is(err, ErrRefused) || wasUp {
					lvl = slog.LevelWarn
				}
				log.Log(p.ctx, lvl, "cannot stream to peer on this link", "addr", addr, "err", err)
				continue
			}
			log.Info("streaming raft messages to peer", "addr", addr)
			wasUp = true
			start := time.Now()
			err = p.pump(s)
			addr := p.stats().Addr // pump may have moved to the preferred link
			p.setStream("", false)
			if p.ctx.Err() != nil {
				return
			}
			life := time.Since(start)
			log.Warn("raft stream to peer lost", "addr", addr, "after", life.Round(time.Millisecond), "err", err)
			p.t.reportUnreachable(p.id)
			if life >= time.Second {
				lived = true
			}
			if life >= stableStream {
				backoff = minBackoff
			}
		}
		if lived {
			// A working stream broke: go through the links again at once,
			// preferred first. (Each such round took a second at least.)
			continue
		}
		if wasUp {
			log.Warn("peer unreachable on every link; retrying", "links", len(addrs), "backoff", backoff)
			wasUp = false
		}
		p.t.reportUnreachable(p.id)
		if !p.wait(backoff) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// wait sleeps for d, dropping what is queued meanwhile: it is stale by the
// time a stream is up, and raft resends what matters. It returns false if
// the peer was stopped.
func (p *peer) wait(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return false
		case <-timer.C:
			return true
		case m := <-p.queue:
			p.drop("peer unreachable", m)
		}
	}
}

// drain counts whatever is left queued as dropped, quietly: the peer was
// removed or the transport closed.
func (p *peer) drain() {
	for {
		select {
		case <-p.queue:
			p.dropped.Add(1)
			p.t.dropped.Add(1)
		default:
			return
		}
	}
}

// pump writes queued messages to s, and to the streams that replace it on
// failback, until one fails or the peer stops. It closes its streams.
func (p *peer) pump(s *stream) error {
	p.setStream(s.addr, true)
	var (
		buf     []byte
		batch   []*raftpb.Message
		probe   chan openResult // a stream being opened on the preferred link
		tick    = time.NewTicker(p.t.failbackEvery)
		closing = func() {
			if probe != nil {
				if r := <-probe; r.s != nil {
					r.s.close()
				}
			}
		}
	)
	defer tick.Stop()
	defer closing()
	for {
		select {
		case <-p.ctx.Done():
			s.close()
			return p.ctx.Err()
		case <-s.done:
			s.close()
			if probe == nil {
				return s.err
			}
			// A stream on the preferred link is on its way: use it.
			r := <-probe
			probe = nil
			if r.err != nil {
				return s.err
			}
			p.t.log.Warn("raft stream to peer lost; moving to the preferred link", "to", p.id, "addr", s.addr, "err", s.err)
			p.t.reportUnreachable(p.id)
			s = r.s
			p.setStream(s.addr, true)
			continue
		case <-tick.C:
			if probe != nil {
				continue
			}
			if addrs := p.t.cfg.Resolver.PeerAddrs(p.id); len(addrs) > 0 && addrs[0] != s.addr {
				probe = make(chan openResult, 1)
				go func(addr string, ch chan<- openResult) {
					s, err := p.t.open(p.ctx, p.id, addr)
					ch <- openResult{s, err}
				}(addrs[0], probe)
			}
			continue
		case r := <-probe:
			probe = nil
			if r.err != nil {
				p.t.log.Debug("preferred link still unusable", "to", p.id, "err", r.err)
				continue
			}
			p.t.log.Info("raft stream back on the preferred link", "to", p.id, "addr", r.s.addr, "from", s.addr)
			s.closeGracefully(p.t.cfg.DialTimeout)
			s = r.s
			p.setStream(s.addr, true)
			continue
		case m := <-p.queue:
			batch = append(batch[:0], m)
		}
		// Gather what else is queued into one write.
		buf = buf[:0]
		for i := 0; i < len(batch) || len(buf) < maxBatch; i++ {
			if i == len(batch) {
				select {
				case m := <-p.queue:
					batch = append(batch, m)
				default:
				}
				if i == len(batch) {
					break
				}
			}
			var err error
			if buf, err = appendFrame(buf, batch[i]); err != nil {
				p.t.log.Error("raft message not sent", "to", p.id, "err", err)
				p.drop("cannot encode", batch[i])
				batch = append(batch[:i], batch[i+1:]...)
				i--
			}
		}
		if len(buf) == 0 {
			continue
		}
		if _, err := s.pw.Write(buf); err != nil {
			p.drop("stream broke", batch...)
			s.close()
			return err
		}
		p.sent.Add(uint64(len(batch)))
		for _, m := range batch {
			if m.GetType() == raftpb.MsgSnap {
				p.t.reportSnapshot(p.id, false)
			}
		}
		clear(batch)
		if cap(buf) > keepWriteBuf {
			buf = nil
		}
	}
}

type openResult struct {
	s   *stream
	err error
}

// stream is one POST to a peer. The sender writes frames to pw; the
// request's goroutine closes done when the response ends (the stream is
// dead) and sets err first.
type stream struct {
	addr   string
	pw     *io.PipeWriter
	pr     *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// open starts a stream to node at addr and waits until the peer accepts it.
func (t *Transport) open(ctx context.Context, node uint64, addr string) (*stream, error) {
	sctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(sctx, http.MethodPost, "https://"+addr+StreamPath, pr)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("peer: stream to %s: %w", addr, err)
	}
	req.Header.Set(HeaderFrom, strconv.FormatUint(t.cfg.Self, 10))
	req.Header.Set(HeaderTo, strconv.FormatUint(node, 10))
	req.Header.Set("Content-Type", contentType)
	s := &stream{addr: addr, pw: pw, pr: pr, cancel: cancel, done: make(chan struct{})}
	accepted := make(chan error, 1)
	go func() {
		defer close(s.done)
		resp, err := t.client.Do(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			err = fmt.Errorf("%w by %s: %s: %s", ErrRefused, addr, resp.Status, bytes.TrimSpace(msg))
		}
		if err != nil {
			s.err = err
			pr.CloseWithError(err)
			accepted <- err
			return
		}
		accepted <- nil
		// The receiver sends nothing more; the body ends with the stream.
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil {
			err = errStreamEnded
		}
		s.err = err
		pr.CloseWithError(err)
	}()
	limit := 3 * t.cfg.DialTimeout
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case err := <-accepted:
		if err != nil {
			s.close()
			return nil, err
		}
		return s, nil
	case <-timer.C:
		s.close()
		return nil, fmt.Errorf("peer: %s did not accept the stream within %v", addr, limit)
	}
}

// close ends the stream at once and waits for its goroutine.
func (s *stream) close() {
	s.cancel()
	s.pw.CloseWithError(errClosed)
	<-s.done
}

// closeGracefully ends the request body, so that the receiver reads what was
// written, waits up to d for the receiver to finish, then closes.
func (s *stream) closeGracefully(d time.Duration) {
	s.pw.Close()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
	}
	s.close()
}
