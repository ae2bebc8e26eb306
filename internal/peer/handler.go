package peer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/vigil-ha/vigil/internal/pki"
	"go.etcd.io/raft/v3/raftpb"
)

// Handler returns the receiving end of streams, to be mounted at StreamPath
// on the node's HTTPS server (pki.ServerTLS). It requires a client
// certificate of the cluster (401 otherwise), HeaderFrom naming another node
// that Config.Authorize accepts for that certificate (400, 403), HeaderTo
// naming this node (421: the address belongs to another node now), and
// HTTP/2 (505).
//
// Each message read is passed to deliver, in order, with a context canceled
// when the stream ends or the transport closes. A frame that cannot be
// read, a message not from the stream's sender or not for this node, or an
// error from deliver ends the stream; the sender reconnects.
func (t *Transport) Handler(deliver func(ctx context.Context, m *raftpb.Message) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.serve(w, r, deliver)
	})
}

func (t *Transport) serve(w http.ResponseWriter, r *http.Request, deliver func(context.Context, *raftpb.Message) error) {
	log := t.log.With("remote", r.RemoteAddr)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "peer: POST a stream of raft frames", http.StatusMethodNotAllowed)
		return
	}
	name, ok := pki.PeerName(r)
	if !ok {
		log.Warn("raft stream refused: no client certificate of this cluster")
		http.Error(w, "peer: a client certificate of this cluster is required", http.StatusUnauthorized)
		return
	}
	log = log.With("peer", name)
	from, err := strconv.ParseUint(r.Header.Get(HeaderFrom), 10, 64)
	if err != nil || from == 0 || from == t.cfg.Self {
		log.Warn("raft stream refused: bad sender ID", "header", r.Header.Get(HeaderFrom))
		http.Error(w, "peer: bad or missing "+HeaderFrom, http.StatusBadRequest)
		return
	}
	log = log.With("from", from)
	if to := r.Header.Get(HeaderTo); to != strconv.FormatUint(t.cfg.Self, 10) {
		log.Warn("raft stream refused: meant for another node", "to", to)
		http.Error(w, "peer: this is node "+strconv.FormatUint(t.cfg.Self, 10)+" ("+t.cfg.SelfName+"), not "+to, http.StatusMisdirectedRequest)
		return
	}
	if t.cfg.Authorize != nil && !t.cfg.Authorize(name, from) {
		log.Warn("raft stream refused: certificate not allowed to send as this node")
		http.Error(w, "peer: certificate "+strconv.Quote(name)+" may not send as node "+strconv.FormatUint(from, 10), http.StatusForbidden)
		return
	}
	if r.ProtoMajor < 2 {
		http.Error(w, "peer: raft streams need HTTP/2", http.StatusHTTPVersionNotSupported)
		return
	}

	t.mu.RLock()
	closed := t.closed
	if !closed {
		t.handlers.Add(1)
	}
	t.mu.RUnlock()
	if closed {
		http.Error(w, "peer: transport closed", http.StatusServiceUnavailable)
		return
	}
	defer t.handlers.Done()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	// A blocked body read ends when the stream's context does (HTTP/2
	// request bodies may be closed concurrently with a read).
	context.AfterFunc(ctx, func() { r.Body.Close() })

	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{}) // the stream outlives any server ReadTimeout
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		log.Warn("raft stream: cannot answer", "err", err)
		return
	}
	log.Info("raft stream from peer accepted")

	fr := newFrameReader(r.Body)
	for {
		m, err := fr.next()
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			log.Info("raft stream closed by peer")
			return
		case ctx.Err() != nil:
			log.Info("raft stream ended", "why", context.Cause(ctx))
			return
		case errors.Is(err, ErrFrameVersion), errors.Is(err, ErrFrameSize), errors.Is(err, ErrFrameMessage), errors.Is(err, io.ErrUnexpectedEOF):
			log.Error("raft stream: bad frame, closing the stream", "err", err)
			return
		default:
			log.Warn("raft stream broken", "err", err)
			return
		}
		if m.GetFrom() != from || m.GetTo() != t.cfg.Self {
			log.Error("raft stream: message with wrong sender or receiver, closing the stream",
				"msg_from", m.GetFrom(), "msg_to", m.GetTo(), "type", m.GetType())
			return
		}
		if err := deliver(ctx, m); err != nil {
			log.Warn("raft stream: message not delivered, closing the stream", "type", m.GetType(), "err", err)
			return
		}
	}
}
