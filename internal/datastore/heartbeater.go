package datastore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultHeartbeatInterval is how often a Heartbeater writes by default.
const DefaultHeartbeatInterval = time.Second

// ErrBusy means the previous heartbeat write has not returned yet (the
// datastore hangs): no second write is started behind it, so that a hung
// mount costs one goroutine, not one per interval.
var ErrBusy = errors.New("datastore: previous heartbeat write still pending")

// HeartbeaterConfig configures a Heartbeater.
type HeartbeaterConfig struct {
	Root        string
	Node        string
	Incarnation string // this boot's id; must change when the node restarts
	// Interval between writes; default DefaultHeartbeatInterval.
	Interval time.Duration
	// Timeout bounds each write; default Interval.
	Timeout time.Duration
	// FS defaults to OSFS.
	FS FS
}

// HeartbeatStatus is what a Heartbeater has achieved, for health display.
type HeartbeatStatus struct {
	Counter uint64    // of the latest write attempted
	LastOK  time.Time // when the latest successful write completed
	Err     error     // of the latest attempt; nil if it succeeded
}

// Heartbeater writes this node's heartbeat slot every Interval: the second
// liveness channel, which lets the DC tell an isolated node (network gone,
// still beating on storage) from a dead one. It is safe for concurrent
// use.
type Heartbeater struct {
	cfg HeartbeaterConfig

	mu       sync.Mutex
	state    State
	released []string
	index    uint64
	counter  uint64
	inflight bool
	status   HeartbeatStatus
}

// NewHeartbeater checks cfg and returns a Heartbeater in StateAlive. It
// writes nothing until Beat or Run.
func NewHeartbeater(cfg HeartbeaterConfig) (*Heartbeater, error) {
	if err := checkName("node", cfg.Node); err != nil {
		return nil, err
	}
	if cfg.Incarnation == "" {
		return nil, fmt.Errorf("%w: heartbeater of %s without an incarnation", ErrName, cfg.Node)
	}
	if cfg.Interval < 0 || cfg.Timeout < 0 {
		return nil, errors.New("datastore: negative heartbeat interval or timeout")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultHeartbeatInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = cfg.Interval
	}
	if cfg.FS == nil {
		cfg.FS = OSFS{}
	}
	return &Heartbeater{cfg: cfg, state: StateAlive}, nil
}

// SetState sets what the next writes say, and reports whether that
// changed. To let the DC recover a resource early, list it in released
// only once it is stopped and its disk lease released, with nodeIndex the
// version of the node's record the claim is tied to (HeartbeatRecord.
// NodeIndex): the node must write that record anew before it starts a
// listed resource again.
func (h *Heartbeater) SetState(state State, released []string, nodeIndex uint64) bool {
	released = slices.Clone(released)
	slices.Sort(released)
	if len(released) == 0 {
		released, nodeIndex = nil, 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := h.state != state || h.index != nodeIndex || !slices.Equal(h.released, released)
	h.state, h.released, h.index = state, released, nodeIndex
	return changed
}

// Status reports the latest write.
func (h *Heartbeater) Status() HeartbeatStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status
}

// Beat writes the slot once, now, bounded by ctx and the configured
// Timeout. If the previous write is still pending it returns ErrBusy.
func (h *Heartbeater) Beat(ctx context.Context) error {
	h.mu.Lock()
	if h.inflight {
		h.status.Err = ErrBusy
		h.mu.Unlock()
		return ErrBusy
	}
	h.counter++
	rec := HeartbeatRecord{
		Node:        h.cfg.Node,
		Incarnation: h.cfg.Incarnation,
		Counter:     h.counter,
		State:       h.state,
		Released:    h.released,
		NodeIndex:   h.index,
		Written:     time.Now(),
	}
	h.status.Counter = h.counter
	h.inflight = true
	h.mu.Unlock()

	data, err := encodeHeartbeat(rec)
	if err != nil {
		h.finish(err)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// The write may outlive Beat on a hung mount; only its own end
		// clears inflight, so writes never overtake each other.
		err := h.cfg.FS.WriteFile(hbPath(h.cfg.Root, h.cfg.Node), data)
		h.mu.Lock()
		h.inflight = false
		h.mu.Unlock()
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctxErr(ctx.Err())
	}
	if err != nil {
		err = fmt.Errorf("write heartbeat of %s: %w", h.cfg.Node, err)
	}
	h.finish(err)
	return err
}

func (h *Heartbeater) finish(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status.Err = err
	if err == nil {
		h.status.LastOK = time.Now()
	}
}

// Run beats every Interval until ctx ends, and returns ctx's error. Write
// failures do not stop it; they show in Status (and in the DC's view).
func (h *Heartbeater) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		_ = h.Beat(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Slot is one heartbeat slot as read by a Reader.
type Slot struct {
	Node   string
	Record HeartbeatRecord
	// Err: the slot could not be used (corrupt, newer format, or naming
	// another node).
	Err error
}

// Reader reads every heartbeat slot of a datastore, for the DC and for
// display.
type Reader struct {
	Root string
	FS   FS // defaults to OSFS
}

// Read lists and reads all slots, sorted by node, bounded by ctx. A slot
// that cannot be read or decoded is returned with its Err; a failure to
// list the folder (or a hang) fails the whole read.
func (r Reader) Read(ctx context.Context) ([]Slot, error) {
	fsys := r.FS
	if fsys == nil {
		fsys = OSFS{}
	}
	slots, err := do(ctx, func() ([]Slot, error) {
		names, err := fsys.ReadDir(hbDir(r.Root))
		if err != nil {
			return nil, err
		}
		var slots []Slot
		for _, n := range names {
			if strings.HasPrefix(n, ".") {
				continue // a writer's temporary file
			}
			s := Slot{Node: n}
			data, err := fsys.ReadFile(hbPath(r.Root, n))
			switch {
			case errors.Is(err, fs.ErrNotExist):
				continue // removed since listed
			case err != nil:
				s.Err = err
			default:
				s.Record, s.Err = decodeHeartbeat(data)
				if s.Err == nil && s.Record.Node != n {
					s.Err = fmt.Errorf("%w: slot %s holds a heartbeat of %s", ErrCorrupt, n, s.Record.Node)
				}
			}
			if s.Err != nil {
				s.Err = fmt.Errorf("heartbeat slot %s: %w", n, s.Err)
			}
			slots = append(slots, s)
		}
		slices.SortFunc(slots, func(a, b Slot) int { return strings.Compare(a.Node, b.Node) })
		return slots, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read heartbeats in %s: %w", r.Root, err)
	}
	return slots, nil
}
