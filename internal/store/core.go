package store

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Sentinel errors of Core and Node.
var (
	// ErrNoLeader refuses a proposal when this node knows no leader.
	ErrNoLeader = errors.New("store: no leader")
	// ErrConfChangePending refuses a membership change while another one
	// may still be unapplied (raft allows one at a time and would silently
	// drop the second).
	ErrConfChangePending = errors.New("store: another membership change is in progress")
	// ErrProposalDropped is raft refusing a proposal (say during a leader
	// transfer, or on a node removed from the cluster).
	ErrProposalDropped = errors.New("store: proposal dropped")
	// ErrAlreadyBootstrapped refuses Bootstrap on a disk that holds data.
	ErrAlreadyBootstrapped = errors.New("store: disk already holds a cluster")
)

// Config configures a Core.
type Config struct {
	// ID is this node's raft ID, non-zero and never reused.
	ID uint64
	// Name is this node's member name (for logs and Status).
	Name string
	// ElectionTick is the election timeout in ticks; default 10.
	ElectionTick int
	// HeartbeatTick is the heartbeat interval in ticks; default 1.
	HeartbeatTick int
	// SnapshotEvery is how many applied entries trigger a new snapshot and
	// log compaction; default 1000.
	SnapshotEvery uint64
	// Logger receives raft's own logs; default: Log at debug level (raft's
	// warnings and errors keep their level).
	Logger raft.Logger
	// Log receives the store's logs (leader changes, conf changes,
	// snapshots); default slog.Default().
	Log *slog.Logger
}

func (c *Config) withDefaults() error {
	if c.ID == 0 {
		return errors.New("store: config: ID must be non-zero")
	}
	if c.ElectionTick == 0 {
		c.ElectionTick = 10
	}
	if c.HeartbeatTick == 0 {
		c.HeartbeatTick = 1
	}
	if c.HeartbeatTick >= c.ElectionTick {
		return fmt.Errorf("store: config: HeartbeatTick %d must be below ElectionTick %d", c.HeartbeatTick, c.ElectionTick)
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 1000
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	c.Log = c.Log.With("node", c.Name, "raft_id", c.ID)
	if c.Logger == nil {
		c.Logger = raftLogger{c.Log}
	}
	return nil
}

// Result is the outcome of one applied proposal.
type Result struct {
	// ID is the proposer's wait id.
	ID uint64
	// Index is the raft index the command was applied at.
	Index uint64
	// Epoch is the epoch after the command.
	Epoch uint64
	// Err is the state machine's rejection (ErrEpochMismatch, ...), or nil.
	Err error
}

// Output is what one Process call produced. Everything in it is already
// durable on Disk.
type Output struct {
	// Messages must be sent to the peers named in To.
	Messages []*raftpb.Message
	// Applied holds the results of proposals made on this node (and only
	// those) that were applied in this Ready.
	Applied []Result
	// LeaderChanged says the known leader changed; see Status.
	LeaderChanged bool
}

// Status is a point-in-time view of a Core.
type Status struct {
	ID       uint64
	Name     string
	Term     uint64
	Lead     uint64
	Role     string // raft state: StateFollower, StateLeader, ...
	Commit   uint64
	Applied  uint64
	Epoch    uint64
	Voters   []uint64
	Learners []uint64
}

// Core is the synchronous store node: raft RawNode, raft MemoryStorage
// rebuilt from a Disk, and the State. It owns no goroutine, clock or socket
// and is not safe for concurrent use; Node is its shell, the simulator drives
// it directly.
type Core struct {
	cfg   Config
	disk  Disk
	log   *slog.Logger
	ms    *raft.MemoryStorage
	rn    *raft.RawNode
	state *State

	snapIndex   uint64
	lead        uint64
	raftState   raft.StateType
	leaderSince uint64 // last index when this node became leader
	ccProposed  bool   // a conf change was proposed since the last Process
	ccApplied   bool   // a conf change was applied in this Process
	failed      error  // a fatal error; every later call returns it
}

// Bootstrap writes the initial state of a brand-new cluster to an empty disk:
// a snapshot at index 1, term 1, whose ConfState lists the voters and
// learners of members and whose data is a State holding members (epoch 1).
// Every initial node bootstraps with the same members, so their logs agree
// and no ConfChange entries are needed. A node joining later does not
// bootstrap: it starts on an empty disk and receives a snapshot.
func Bootstrap(disk Disk, members []Member) error {
	p, err := disk.Load()
	if err != nil {
		return fmt.Errorf("store: bootstrap: %w", err)
	}
	if !p.IsEmpty() {
		return ErrAlreadyBootstrapped
	}
	s := NewState()
	for _, m := range members {
		if err := s.check(AddNode{Member: m}); err != nil {
			return fmt.Errorf("store: bootstrap: %w", err)
		}
		s.members[m.Name] = m.clone()
	}
	if s.voters() == 0 {
		return errors.New("store: bootstrap: no voters")
	}
	s.index, s.epoch, s.reset = 1, 1, true
	data, err := s.Marshal()
	if err != nil {
		return fmt.Errorf("store: bootstrap: %w", err)
	}
	snap := &raftpb.Snapshot{
		Data: data,
		Metadata: &raftpb.SnapshotMetadata{
			ConfState: s.ConfState(),
			Index:     new(uint64(1)),
			Term:      new(uint64(1)),
		},
	}
	err = disk.Save(&Update{
		Snapshot:  snap,
		HardState: &raftpb.HardState{Term: new(uint64(1)), Commit: new(uint64(1))},
		Applied:   s.takeChanges(),
	})
	if err != nil {
		return fmt.Errorf("store: bootstrap: %w", err)
	}
	return nil
}

// storage is raft.MemoryStorage with the ConfState as of the applied index:
// Core restarts raft at the applied index (raft.Config.Applied), so raft must
// see the configuration the applied entries left, not the snapshot's.
type storage struct {
	*raft.MemoryStorage
	cs *raftpb.ConfState
}

func (s storage) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	hs, _, err := s.MemoryStorage.InitialState()
	return hs, s.cs, err
}

// NewCore starts a Core on disk: after Bootstrap, after a restart, or (empty
// disk) as a node joining an existing cluster, which waits for the leader's
// snapshot.
func NewCore(cfg Config, disk Disk) (*Core, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	p, err := disk.Load()
	if err != nil {
		return nil, fmt.Errorf("store: start: %w", err)
	}
	c := &Core{cfg: cfg, disk: disk, log: cfg.Log, ms: raft.NewMemoryStorage(), state: p.State}
	if !raft.IsEmptySnap(p.Snapshot) {
		if err := c.ms.ApplySnapshot(p.Snapshot); err != nil {
			return nil, fmt.Errorf("store: start: load snapshot: %w", err)
		}
		c.snapIndex = p.Snapshot.GetMetadata().GetIndex()
		// A crash between installing a snapshot and saving its state cannot
		// happen (one transaction), but a state older than the snapshot
		// is still recoverable: restore from the snapshot.
		if c.state.Index() < c.snapIndex {
			if err := c.restore(p.Snapshot); err != nil {
				return nil, fmt.Errorf("store: start: %w", err)
			}
		}
	}
	if p.HardState != nil {
		if err := c.ms.SetHardState(p.HardState); err != nil {
			return nil, fmt.Errorf("store: start: %w", err)
		}
	}
	if err := c.ms.Append(p.Entries); err != nil {
		return nil, fmt.Errorf("store: start: load log: %w", err)
	}
	if applied, commit := c.state.Index(), p.HardState.GetCommit(); applied > commit {
		return nil, fmt.Errorf("store: start: applied index %d is past commit index %d", applied, commit)
	}
	rc := &raft.Config{
		ID:              cfg.ID,
		ElectionTick:    cfg.ElectionTick,
		HeartbeatTick:   cfg.HeartbeatTick,
		Storage:         storage{c.ms, c.state.ConfState()},
		Applied:         c.state.Index(),
		MaxSizePerMsg:   1 << 20,
		MaxInflightMsgs: 256,
		// A leader that loses its majority steps down within an election
		// timeout, so the DC never lingers in a minority; PreVote keeps a
		// rejoining node from disrupting a healthy leader.
		CheckQuorum:       true,
		PreVote:           true,
		StepDownOnRemoval: true,
		Logger:            cfg.Logger,
	}
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		return nil, fmt.Errorf("store: start raft: %w", err)
	}
	c.rn = rn
	c.log.Info("store: started", "applied", c.state.Index(), "epoch", c.state.Epoch(),
		"snapshot", c.snapIndex, "commit", p.HardState.GetCommit(), "entries", len(p.Entries))
	return c, nil
}

// Tick advances raft's logical clock by one tick.
func (c *Core) Tick() { c.rn.Tick() }

// Campaign makes this node start an election now (tests, leadership
// hand-over).
func (c *Core) Campaign() error { return c.rn.Campaign() }

// TransferLeader starts a leadership transfer to the given voter.
func (c *Core) TransferLeader(to uint64) { c.rn.TransferLeader(to) }

// ForgetLeader makes a follower leaderless in its current term, so it can
// grant pre-votes before its election timeout (see Node.ForgetLeader).
func (c *Core) ForgetLeader() error { return c.rn.ForgetLeader() }

// Step hands a message from a peer to raft.
func (c *Core) Step(m *raftpb.Message) error {
	if err := c.rn.Step(m); err != nil {
		return fmt.Errorf("store: step %s from %x: %w", m.GetType(), m.GetFrom(), err)
	}
	return nil
}

// ReportSnapshot tells raft whether a MsgSnap to id reached it.
func (c *Core) ReportSnapshot(id uint64, failed bool) {
	st := raft.SnapshotFinish
	if failed {
		st = raft.SnapshotFailure
	}
	c.rn.ReportSnapshot(id, st)
}

// ReportUnreachable tells raft a message to id could not be sent.
func (c *Core) ReportUnreachable(id uint64) { c.rn.ReportUnreachable(id) }

// Propose proposes cmd. id is the proposer's wait id: it travels in the entry
// with this node's ID, and when the entry is applied here, Process reports
// Result{ID: id} in Output.Applied. On a follower raft forwards the proposal
// to the leader (MsgProp); the result still comes back through this node's
// own applier, because every node applies every entry.
//
// A nil error means only that raft took the proposal; it may still be lost
// (leader change, partition), in which case no Result ever comes.
// Membership commands (AddNode, RemoveNode, Promote) go as one
// ConfChangeV2 entry whose Context carries the command, so the raft change
// and the state change apply together or not at all.
func (c *Core) Propose(id uint64, cmd Command) error {
	if c.failed != nil {
		return c.failed
	}
	if c.rn.BasicStatus().Lead == raft.None {
		return ErrNoLeader
	}
	data, err := encodeCommand(c.cfg.ID, id, cmd)
	if err != nil {
		return err
	}
	if !isMembership(cmd) {
		err = c.rn.Propose(data)
	} else {
		var cc *raftpb.ConfChangeV2
		if cc, err = confChangeFor(c.state, cmd); err != nil {
			return err
		}
		if err = c.confChangePending(); err != nil {
			return err
		}
		cc.Context = data
		if err = c.rn.ProposeConfChange(cc); err == nil {
			c.ccProposed = true
		}
	}
	if errors.Is(err, raft.ErrProposalDropped) {
		if c.rn.BasicStatus().Lead == raft.None {
			return ErrNoLeader
		}
		return ErrProposalDropped
	}
	if err != nil {
		return fmt.Errorf("store: propose: %w", err)
	}
	return nil
}

// confChangePending reports ErrConfChangePending when this node leads and a
// conf change may be unapplied. Raft refuses (by turning it into an empty
// entry) a conf change proposed while one is pending, or before the leader
// applied its first own-term entry; then the waiter would only time out.
// Followers cannot tell; there a dropped conf change times out.
func (c *Core) confChangePending() error {
	bs := c.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader {
		return nil
	}
	applied := c.state.Index()
	if c.ccProposed || applied < c.leaderSince {
		return ErrConfChangePending
	}
	last, err := c.ms.LastIndex()
	if err != nil || last <= applied {
		return nil
	}
	ents, err := c.ms.Entries(applied+1, last+1, 1<<62)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal {
			return ErrConfChangePending
		}
	}
	return nil
}

// confChangeFor returns the raft conf change a membership command implies
// against state s. Apply checks it again against the state at the entry.
func confChangeFor(s *State, cmd Command) (*raftpb.ConfChangeV2, error) {
	var typ raftpb.ConfChangeType
	var id uint64
	switch c := cmd.(type) {
	case AddNode:
		if err := c.Member.validate(); err != nil {
			return nil, err
		}
		id, typ = c.Member.ID, raftpb.ConfChangeAddNode
		if c.Member.Role == RoleLearner {
			typ = raftpb.ConfChangeAddLearnerNode
		}
	case RemoveNode:
		m, ok := s.members[c.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrUnknownNode, c.Name)
		}
		id, typ = m.ID, raftpb.ConfChangeRemoveNode
	case Promote:
		m, ok := s.members[c.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrUnknownNode, c.Name)
		}
		id, typ = m.ID, raftpb.ConfChangeAddNode
	default:
		return nil, fmt.Errorf("%w: %T is not a membership command", ErrBadCommand, cmd)
	}
	return &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: new(id)}}}, nil
}

// HasReady reports whether Process has work.
func (c *Core) HasReady() bool { return c.failed == nil && c.rn.HasReady() }

// Process handles one raft Ready, in the order raft requires:
//
//  1. apply the received snapshot (if any) and the committed entries to the
//     state machine, in memory;
//  2. save snapshot, new entries, hard state and the applied state changes
//     to Disk in one atomic write, plus a new local snapshot when
//     SnapshotEvery entries were applied since the last;
//  3. only then return the messages (so nothing is promised to a peer
//     before it is durable), and Advance.
//
// Applying before saving is safe because both land in the same
// transaction, and raft hands out committed entries that are only in this
// Ready's unstable Entries (single-node commits) for exactly this reason.
// An error is fatal: the Core refuses all further work.
func (c *Core) Process() (Output, error) {
	var out Output
	if c.failed != nil {
		return out, c.failed
	}
	if !c.rn.HasReady() {
		return out, nil
	}
	rd := c.rn.Ready()
	c.ccProposed = false // its entry is in rd.Entries, seen in c.ms from now on
	if err := c.process(rd, &out); err != nil {
		c.failed = fmt.Errorf("store: node %x stopped: %w", c.cfg.ID, err)
		return Output{}, c.failed
	}
	c.rn.Advance(rd)
	return out, nil
}

func (c *Core) process(rd raft.Ready, out *Output) error {
	if rd.SoftState != nil {
		if rd.SoftState.RaftState == raft.StateLeader && c.raftState != raft.StateLeader {
			c.leaderSince = c.lastIndexAfter(rd)
		}
		if rd.SoftState.Lead != c.lead {
			out.LeaderChanged = true
			c.log.Info("store: leader changed", "lead", rd.SoftState.Lead, "was", c.lead,
				"term", c.rn.BasicStatus().GetTerm(), "state", rd.SoftState.RaftState.String())
		}
		c.lead, c.raftState = rd.SoftState.Lead, rd.SoftState.RaftState
	}

	u := &Update{Entries: rd.Entries}
	if !raft.IsEmptyHardState(rd.HardState) {
		u.HardState = rd.HardState
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		u.Snapshot = rd.Snapshot
		if err := c.ms.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("install snapshot %d: %w", rd.Snapshot.GetMetadata().GetIndex(), err)
		}
		c.snapIndex = rd.Snapshot.GetMetadata().GetIndex()
		if err := c.restore(rd.Snapshot); err != nil {
			return err
		}
		c.log.Info("store: installed snapshot", "index", c.snapIndex, "epoch", c.state.Epoch())
	}
	if err := c.ms.Append(rd.Entries); err != nil {
		return fmt.Errorf("append entries: %w", err)
	}
	if u.HardState != nil {
		if err := c.ms.SetHardState(u.HardState); err != nil {
			return fmt.Errorf("set hard state: %w", err)
		}
	}
	c.ccApplied = false
	for _, e := range rd.CommittedEntries {
		if err := c.apply(e, out); err != nil {
			return err
		}
	}
	u.Applied = c.state.takeChanges()
	// Snapshot every SnapshotEvery entries, and after each membership
	// change: a node joining gets the latest snapshot, and raft makes it
	// refuse one whose ConfState does not list it yet.
	applied := c.state.Index()
	if applied-c.snapIndex >= c.cfg.SnapshotEvery || (c.ccApplied && applied > c.snapIndex) {
		snap, err := c.snapshot(applied)
		if err != nil {
			return err
		}
		u.Compact = snap
	}
	if err := c.disk.Save(u); err != nil {
		return err
	}
	if u.Compact != nil {
		// Compact memory only once the snapshot is durable.
		if err := c.ms.Compact(c.snapIndex); err != nil && !errors.Is(err, raft.ErrCompacted) {
			return fmt.Errorf("compact log to %d: %w", c.snapIndex, err)
		}
	}
	out.Messages = rd.Messages
	return nil
}

func (c *Core) lastIndexAfter(rd raft.Ready) uint64 {
	if n := len(rd.Entries); n > 0 {
		return rd.Entries[n-1].GetIndex()
	}
	last, _ := c.ms.LastIndex()
	return last
}

func (c *Core) restore(snap *raftpb.Snapshot) error {
	s, err := UnmarshalState(snap.GetData())
	if err != nil {
		return fmt.Errorf("restore snapshot %d: %w", snap.GetMetadata().GetIndex(), err)
	}
	if s.Index() != snap.GetMetadata().GetIndex() {
		return fmt.Errorf("restore snapshot %d: state says index %d", snap.GetMetadata().GetIndex(), s.Index())
	}
	s.reset = true
	c.state = s
	return nil
}

// snapshot makes a snapshot of the applied state at index applied.
func (c *Core) snapshot(applied uint64) (*raftpb.Snapshot, error) {
	data, err := c.state.Marshal()
	if err != nil {
		return nil, err
	}
	snap, err := c.ms.CreateSnapshot(applied, c.state.ConfState(), data)
	if err != nil {
		return nil, fmt.Errorf("create snapshot at %d: %w", applied, err)
	}
	c.snapIndex = applied
	c.log.Info("store: snapshot", "index", applied, "epoch", c.state.Epoch(), "bytes", len(data))
	return snap, nil
}

// apply applies one committed entry. Only an entry in a newer format than
// this binary knows is an error (fatal); a command the state machine
// rejects is a Result.
func (c *Core) apply(e *raftpb.Entry, out *Output) error {
	idx := e.GetIndex()
	if idx <= c.state.Index() {
		return nil // already applied (and saved) before a restart
	}
	var data []byte
	var cc *raftpb.ConfChangeV2
	switch e.GetType() {
	case raftpb.EntryNormal:
		data = e.GetData()
	case raftpb.EntryConfChangeV2:
		cc = &raftpb.ConfChangeV2{}
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			// Every node fails alike: reject, do not touch raft's config.
			c.log.Warn("store: undecodable conf change", "index", idx, "err", err)
			c.state.setIndex(idx)
			return nil
		}
		data = cc.GetContext()
	default:
		// Vigil never proposes v1 ConfChanges; reject without applying.
		c.log.Warn("store: ignoring entry", "index", idx, "type", e.GetType().String())
		c.state.setIndex(idx)
		return nil
	}
	if len(data) == 0 {
		// A new leader's empty entry, or a proposal raft replaced.
		c.state.setIndex(idx)
		return nil
	}
	from, id, cmd, err := decodeCommand(data)
	if errors.Is(err, errFormat) {
		return fmt.Errorf("apply entry %d: %w", idx, err)
	}
	var epoch uint64
	switch {
	case err != nil:
		c.state.setIndex(idx)
		epoch = c.state.Epoch()
	case isMembership(cmd) != (cc != nil):
		c.state.setIndex(idx)
		epoch, err = c.state.Epoch(), fmt.Errorf("%w: %T in a %s entry", ErrBadCommand, cmd, e.GetType())
	case cc != nil:
		epoch, err = c.applyConfChange(idx, cmd, cc)
	default:
		epoch, err = c.state.Apply(idx, cmd)
	}
	if from == c.cfg.ID && id != 0 {
		out.Applied = append(out.Applied, Result{ID: id, Index: idx, Epoch: epoch, Err: err})
	}
	return nil
}

// applyConfChange applies a membership command and, only if the state
// machine accepts it, the raft conf change (raft requires that a rejected
// change is not passed to ApplyConfChange). The conf change must be exactly
// the one the command implies against the current state.
func (c *Core) applyConfChange(idx uint64, cmd Command, cc *raftpb.ConfChangeV2) (uint64, error) {
	if err := c.state.check(cmd); err != nil {
		c.state.setIndex(idx)
		return c.state.Epoch(), err
	}
	want, err := confChangeFor(c.state, cmd)
	if err == nil && (cc.GetTransition() != raftpb.ConfChangeTransitionAuto || !slices.EqualFunc(want.Changes, cc.GetChanges(), func(a, b *raftpb.ConfChangeSingle) bool {
		return a.GetType() == b.GetType() && a.GetNodeId() == b.GetNodeId()
	})) {
		err = fmt.Errorf("%w: conf change %s does not match %T", ErrBadCommand, raft.DescribeConfChange(cc), cmd)
	}
	if err != nil {
		c.state.setIndex(idx)
		return c.state.Epoch(), err
	}
	epoch, err := c.state.Apply(idx, cmd)
	if err != nil {
		return epoch, err // unreachable: checked above
	}
	cs := c.rn.ApplyConfChange(cc)
	c.ccApplied = true
	c.log.Info("store: membership changed", "index", idx, "change", raft.DescribeConfChange(cc),
		"voters", cs.GetVoters(), "learners", cs.GetLearners(), "epoch", epoch)
	return epoch, nil
}

// Status returns the current status.
func (c *Core) Status() Status {
	bs := c.rn.BasicStatus()
	cs := c.state.ConfState()
	return Status{
		ID:       c.cfg.ID,
		Name:     c.cfg.Name,
		Term:     bs.GetTerm(),
		Lead:     bs.Lead,
		Role:     bs.RaftState.String(),
		Commit:   bs.GetCommit(),
		Applied:  c.state.Index(),
		Epoch:    c.state.Epoch(),
		Voters:   cs.GetVoters(),
		Learners: cs.GetLearners(),
	}
}

// progress is what watchers are woken for: the applied index, the leader
// and the term. It is cheap (no member list, no configuration copy), as it
// runs twice per pass of the node's loop.
type progress struct{ applied, lead, term uint64 }

func (c *Core) progress() progress {
	bs := c.rn.BasicStatus()
	return progress{applied: c.state.Index(), lead: bs.Lead, term: bs.GetTerm()}
}

// Read calls fn with the applied state. fn must not modify it or keep it.
func (c *Core) Read(fn func(*State)) { fn(c.state) }

// raftLogger adapts slog to raft.Logger. Raft's info chatter goes to debug.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)                 { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(format string, v ...any) { r.l.Debug(fmt.Sprintf(format, v...)) }
func (r raftLogger) Info(v ...any)                  { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(format string, v ...any)  { r.l.Debug(fmt.Sprintf(format, v...)) }
func (r raftLogger) Warning(v ...any)               { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(format string, v ...any) {
	r.l.Warn(fmt.Sprintf(format, v...))
}
func (r raftLogger) Error(v ...any)                 { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(format string, v ...any) { r.l.Error(fmt.Sprintf(format, v...)) }
func (r raftLogger) Fatal(v ...any)                 { r.Panic(v...) }
func (r raftLogger) Fatalf(format string, v ...any) { r.Panicf(format, v...) }
func (r raftLogger) Panic(v ...any) {
	s := fmt.Sprint(v...)
	r.l.Error(s)
	panic(s)
}
func (r raftLogger) Panicf(format string, v ...any) {
	s := fmt.Sprintf(format, v...)
	r.l.Error(s)
	panic(s)
}
