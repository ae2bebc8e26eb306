package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
)

// FormatVersion is the version of every record this package writes: command
// envelopes in the raft log, snapshots, and the applied state on disk. A
// reader refuses a record with a higher version instead of guessing (see
// "Built to be upgraded in place" in DESIGN.md): a feature needing a new
// format is switched on only once every node understands it.
const FormatVersion = 1

// StatusPrefix marks status keys. The rule: keys under "status/" are status
// (observed facts: where a resource runs, a node's health), not
// configuration, and writing them does not bump the epoch. Every other key
// is configuration.
const StatusPrefix = "status/"

// IsStatusKey reports whether key is a status key (see StatusPrefix).
func IsStatusKey(key string) bool { return strings.HasPrefix(key, StatusPrefix) }

// Errors a command can be rejected with. They reach the proposer as
// Result.Err; every node rejects the same entries, so rejection is part of
// the deterministic state machine.
var (
	// ErrCompareFailed rejects a Txn whose If guards do not hold.
	ErrCompareFailed = errors.New("store: txn compare failed")
	// ErrEpochMismatch rejects a Txn whose IfEpoch differs from the epoch.
	ErrEpochMismatch = errors.New("store: epoch mismatch")
	// ErrBadCommand rejects a malformed command.
	ErrBadCommand = errors.New("store: bad command")
	// ErrNodeExists rejects AddNode with a name or ID already in use.
	ErrNodeExists = errors.New("store: node exists")
	// ErrIDRetired rejects AddNode with the ID of a removed node: a raft ID
	// is never reused.
	ErrIDRetired = errors.New("store: node ID was used before")
	// ErrUnknownNode rejects RemoveNode or Promote of a name not in the
	// cluster.
	ErrUnknownNode = errors.New("store: unknown node")
	// ErrLastVoter rejects removing the last voter.
	ErrLastVoter = errors.New("store: cannot remove the last voter")
	// ErrNotLearner rejects Promote of a node that already votes.
	ErrNotLearner = errors.New("store: node is not a learner")
)

// Role is a member's part in raft.
type Role string

const (
	// RoleVoter votes and may lead.
	RoleVoter Role = "voter"
	// RoleLearner receives the log but does not vote; promote it with
	// Promote once it has caught up.
	RoleLearner Role = "learner"
	// RoleWitness votes and may lead but runs no resources (the model's
	// tie-breaker). To raft it is a voter.
	RoleWitness Role = "witness"
)

// Votes reports whether the role is a raft voter.
func (r Role) Votes() bool { return r == RoleVoter || r == RoleWitness }

func (r Role) valid() bool { return r == RoleVoter || r == RoleLearner || r == RoleWitness }

// Member is one node of the raft group as recorded in the state.
type Member struct {
	Name  string   `json:"name"`
	ID    uint64   `json:"id"`
	Links []string `json:"links,omitempty"`
	Role  Role     `json:"role"`
}

func (m Member) validate() error {
	if m.Name == "" {
		return fmt.Errorf("%w: member name is empty", ErrBadCommand)
	}
	if m.ID == 0 {
		return fmt.Errorf("%w: member %s: ID must be non-zero", ErrBadCommand, m.Name)
	}
	if !m.Role.valid() {
		return fmt.Errorf("%w: member %s: role %q: want voter, learner or witness", ErrBadCommand, m.Name, m.Role)
	}
	return nil
}

func (m Member) clone() Member {
	m.Links = slices.Clone(m.Links)
	return m
}

// TargetVoters returns how many of n members should vote: all of them when
// fewer than 3, else 3, and 5 from 5 members on. An odd count buys nothing
// for an even one (4 voters tolerate one failure, like 3) and more than 5
// only slows commits. The agent compares it with the voters it has and
// promotes learners with Promote; the store never promotes on its own.
func TargetVoters(n int) int {
	switch {
	case n < 3:
		return n
	case n < 5:
		return 3
	default:
		return 5
	}
}

// Command is one change to the state, proposed through raft. The concrete
// types are Put, Delete, Txn, AddNode, RemoveNode and Promote.
type Command interface{ isCommand() }

// Put sets Key to Value.
type Put struct {
	Key   string
	Value []byte
}

// Delete removes Key. Deleting a missing key succeeds and changes nothing
// (so it does not bump the epoch).
type Delete struct{ Key string }

// Txn applies Ops atomically. With IfEpoch non-zero it is rejected with
// ErrEpochMismatch unless the epoch equals IfEpoch (the epoch is at least 1
// after Bootstrap, so 0 means "no compare"). A Txn bumps the epoch once if
// any op changes configuration.
type Txn struct {
	Ops     []Op
	IfEpoch uint64
	// If lists per-key guards: the Txn is rejected with ErrCompareFailed
	// unless every key is at the given version (0: the key is absent). It
	// lets a writer act on what it read, such as the DC recording that a
	// node it fenced is down only if that node has not come back since.
	If []Cmp
}

// Cmp guards a Txn on one key's version (Item.Version; 0 = absent).
type Cmp struct {
	Key     string
	Version uint64
}

// Op is one write in a Txn: a Put, or a Delete when Delete is set.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
}

// AddNode adds a member. A voter or witness is added as a raft voter, a
// learner as a raft learner; the raft conf change and the state change are
// applied together.
type AddNode struct{ Member Member }

// RemoveNode removes a member from the state and from raft.
type RemoveNode struct{ Name string }

// Promote turns a learner into a voter.
type Promote struct{ Name string }

func (Put) isCommand()        {}
func (Delete) isCommand()     {}
func (Txn) isCommand()        {}
func (AddNode) isCommand()    {}
func (RemoveNode) isCommand() {}
func (Promote) isCommand()    {}

// isMembership reports whether cmd must travel as a raft conf change.
func isMembership(cmd Command) bool {
	switch cmd.(type) {
	case AddNode, RemoveNode, Promote:
		return true
	}
	return false
}

// Item is the stored form of one key.
type Item struct {
	// Value is the value last written.
	Value []byte `json:"value"`
	// Version counts writes since the key was (re)created, from 1.
	Version uint64 `json:"version"`
	// Index is the raft index of the last write.
	Index uint64 `json:"index"`
}

// State is the replicated state machine: members, a key/value document store
// and the epoch. It is pure and deterministic: the same commands at the same
// indexes give the same state and the same bytes on every node.
//
// NB: a *State handed out by Core.Read or Node.Read is the live state; do not
// modify it or keep it after the callback returns.
type State struct {
	index   uint64
	epoch   uint64
	members map[string]Member
	retired map[uint64]bool
	kv      map[string]Item

	// keys is kv's keys in order, rebuilt lazily after the key set changes
	// (keysOK false), so Range costs a binary search, not a sort.
	keys   []string
	keysOK bool

	// Journal of what changed since the last takeChanges, for Disk.
	dirty    map[string]bool
	reset    bool
	metaDirt bool
}

// NewState returns an empty state (index 0, epoch 0, no members).
func NewState() *State {
	return &State{
		members: map[string]Member{},
		retired: map[uint64]bool{},
		kv:      map[string]Item{},
		dirty:   map[string]bool{},
	}
}

// Index returns the raft index of the last applied entry.
func (s *State) Index() uint64 { return s.index }

// Epoch returns the number of configuration changes applied (see
// StatusPrefix for what does not count). It is 1 after Bootstrap.
func (s *State) Epoch() uint64 { return s.epoch }

// Get returns the item at key.
func (s *State) Get(key string) (Item, bool) {
	it, ok := s.kv[key]
	return it, ok
}

// Range calls fn for each key with the prefix, in key order, until fn
// returns false.
func (s *State) Range(prefix string, fn func(key string, it Item) bool) {
	if !s.keysOK || len(s.keys) != len(s.kv) {
		s.keys = slices.Sorted(maps.Keys(s.kv))
		s.keysOK = true
	}
	i, _ := slices.BinarySearch(s.keys, prefix)
	for _, k := range s.keys[i:] {
		if !strings.HasPrefix(k, prefix) {
			return
		}
		it, ok := s.kv[k]
		if !ok {
			// The key set changed without a rebuild: start over, once.
			s.keysOK = false
			s.Range(prefix, fn)
			return
		}
		if !fn(k, it) {
			return
		}
	}
}

// Len returns the number of keys.
func (s *State) Len() int { return len(s.kv) }

// Member returns the member with the name.
func (s *State) Member(name string) (Member, bool) {
	m, ok := s.members[name]
	return m.clone(), ok
}

// Members returns all members sorted by ID.
func (s *State) Members() []Member {
	out := make([]Member, 0, len(s.members))
	for _, m := range s.members {
		out = append(out, m.clone())
	}
	slices.SortFunc(out, func(a, b Member) int { return cmpU64(a.ID, b.ID) })
	return out
}

// ConfState returns the raft configuration the members imply. Vigil makes
// only simple (one node at a time) conf changes, so the members alone decide
// it; Core relies on that to restart raft at the applied index.
func (s *State) ConfState() *raftpb.ConfState {
	cs := &raftpb.ConfState{}
	for _, m := range s.Members() {
		if m.Role.Votes() {
			cs.Voters = append(cs.Voters, m.ID)
		} else {
			cs.Learners = append(cs.Learners, m.ID)
		}
	}
	return raftpb.EnsureConfState(cs)
}

func (s *State) memberByID(id uint64) (Member, bool) {
	for _, m := range s.members {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func (s *State) voters() int {
	n := 0
	for _, m := range s.members {
		if m.Role.Votes() {
			n++
		}
	}
	return n
}

// Apply applies cmd as the entry at index and returns the epoch after it.
// A rejected command leaves the state unchanged except for the index. Entries
// at or below Index are ignored (already applied), which makes replay after a
// crash idempotent. Core calls Apply; tests and simulators may too.
func (s *State) Apply(index uint64, cmd Command) (uint64, error) {
	if index <= s.index {
		return s.epoch, nil
	}
	s.setIndex(index)
	if err := s.check(cmd); err != nil {
		return s.epoch, err
	}
	if s.mutate(index, cmd) {
		s.epoch++
		s.metaDirt = true
	}
	return s.epoch, nil
}

func (s *State) setIndex(index uint64) {
	s.index = index
	s.metaDirt = true
}

// check validates cmd against the state without changing anything.
func (s *State) check(cmd Command) error {
	switch c := cmd.(type) {
	case Put:
		return checkKey(c.Key)
	case Delete:
		return checkKey(c.Key)
	case Txn:
		if len(c.Ops) == 0 {
			return fmt.Errorf("%w: empty txn", ErrBadCommand)
		}
		for _, op := range c.Ops {
			if err := checkKey(op.Key); err != nil {
				return err
			}
		}
		if c.IfEpoch != 0 && c.IfEpoch != s.epoch {
			return fmt.Errorf("%w: txn wants epoch %d, state is at %d", ErrEpochMismatch, c.IfEpoch, s.epoch)
		}
		for _, cmp := range c.If {
			if got := s.kv[cmp.Key].Version; got != cmp.Version {
				return fmt.Errorf("%w: %s is at version %d, txn wants %d", ErrCompareFailed, cmp.Key, got, cmp.Version)
			}
		}
		return nil
	case AddNode:
		m := c.Member
		if err := m.validate(); err != nil {
			return err
		}
		if _, ok := s.members[m.Name]; ok {
			return fmt.Errorf("%w: name %s", ErrNodeExists, m.Name)
		}
		if o, ok := s.memberByID(m.ID); ok {
			return fmt.Errorf("%w: ID %d belongs to %s", ErrNodeExists, m.ID, o.Name)
		}
		if s.retired[m.ID] {
			return fmt.Errorf("%w: %d", ErrIDRetired, m.ID)
		}
		return nil
	case RemoveNode:
		m, ok := s.members[c.Name]
		if !ok {
			return fmt.Errorf("%w: %s", ErrUnknownNode, c.Name)
		}
		// Raft panics on a configuration without voters; refuse it here.
		if m.Role.Votes() && s.voters() == 1 {
			return fmt.Errorf("%w: %s", ErrLastVoter, c.Name)
		}
		return nil
	case Promote:
		m, ok := s.members[c.Name]
		if !ok {
			return fmt.Errorf("%w: %s", ErrUnknownNode, c.Name)
		}
		if m.Role != RoleLearner {
			return fmt.Errorf("%w: %s is a %s", ErrNotLearner, c.Name, m.Role)
		}
		return nil
	case nil:
		return fmt.Errorf("%w: nil command", ErrBadCommand)
	default:
		return fmt.Errorf("%w: unknown command %T", ErrBadCommand, cmd)
	}
}

func checkKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: empty key", ErrBadCommand)
	}
	return nil
}

// mutate applies a checked command and reports whether configuration
// changed (the epoch must be bumped).
func (s *State) mutate(index uint64, cmd Command) bool {
	switch c := cmd.(type) {
	case Put:
		return s.put(index, c.Key, c.Value)
	case Delete:
		return s.del(c.Key)
	case Txn:
		changed := false
		for _, op := range c.Ops {
			if op.Delete {
				changed = s.del(op.Key) || changed
			} else {
				changed = s.put(index, op.Key, op.Value) || changed
			}
		}
		return changed
	case AddNode:
		s.members[c.Member.Name] = c.Member.clone()
		return true
	case RemoveNode:
		m := s.members[c.Name]
		delete(s.members, c.Name)
		s.retired[m.ID] = true
		return true
	case Promote:
		m := s.members[c.Name]
		m.Role = RoleVoter
		s.members[c.Name] = m
		return true
	}
	return false
}

func (s *State) put(index uint64, k string, v []byte) bool {
	it, existed := s.kv[k]
	if !existed {
		s.keysOK = false
	}
	s.kv[k] = Item{Value: bytes.Clone(v), Version: it.Version + 1, Index: index}
	s.dirty[k] = true
	return !IsStatusKey(k)
}

func (s *State) del(k string) bool {
	if _, ok := s.kv[k]; !ok {
		return false
	}
	delete(s.kv, k)
	s.keysOK = false
	s.dirty[k] = true
	return !IsStatusKey(k)
}

// Clone returns a deep copy (without the change journal).
func (s *State) Clone() *State {
	c := NewState()
	c.index, c.epoch = s.index, s.epoch
	for k, m := range s.members {
		c.members[k] = m.clone()
	}
	maps.Copy(c.retired, s.retired)
	for k, it := range s.kv {
		it.Value = bytes.Clone(it.Value)
		c.kv[k] = it
	}
	return c
}

// Equal reports whether two states hold the same data.
func (s *State) Equal(o *State) bool {
	a, err1 := s.Marshal()
	b, err2 := o.Marshal()
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// StateMeta is the small, always-rewritten part of the state.
type StateMeta struct {
	V       int      `json:"v"`
	Index   uint64   `json:"index"`
	Epoch   uint64   `json:"epoch"`
	Members []Member `json:"members"`
	Retired []uint64 `json:"retired,omitempty"`
}

// KV is one key with its item.
type KV struct {
	Key  string `json:"key"`
	Item Item   `json:"item"`
}

// snapshotDoc is the encoding of a whole state: meta plus sorted keys.
type snapshotDoc struct {
	StateMeta
	KV []KV `json:"kv"`
}

func (s *State) meta() StateMeta {
	return StateMeta{
		V:       FormatVersion,
		Index:   s.index,
		Epoch:   s.epoch,
		Members: s.Members(),
		Retired: slices.Sorted(maps.Keys(s.retired)),
	}
}

// Marshal encodes the whole state. The bytes are deterministic (members by
// ID, keys sorted), so equal states encode equally on every node.
func (s *State) Marshal() ([]byte, error) {
	doc := snapshotDoc{StateMeta: s.meta(), KV: make([]KV, 0, len(s.kv))}
	for _, k := range slices.Sorted(maps.Keys(s.kv)) {
		doc.KV = append(doc.KV, KV{Key: k, Item: s.kv[k]})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("store: encode state: %w", err)
	}
	return b, nil
}

// UnmarshalState decodes what Marshal encoded.
func UnmarshalState(b []byte) (*State, error) {
	var doc snapshotDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("store: decode state: %w", err)
	}
	s := NewState()
	if err := s.setMeta(doc.StateMeta); err != nil {
		return nil, err
	}
	for _, kv := range doc.KV {
		s.kv[kv.Key] = kv.Item
	}
	return s, nil
}

func (s *State) setMeta(m StateMeta) error {
	if m.V > FormatVersion {
		return fmt.Errorf("store: state has format v%d, this binary knows up to v%d", m.V, FormatVersion)
	}
	s.index, s.epoch = m.Index, m.Epoch
	clear(s.members)
	for _, mb := range m.Members {
		s.members[mb.Name] = mb.clone()
	}
	clear(s.retired)
	for _, id := range m.Retired {
		s.retired[id] = true
	}
	return nil
}

// Changes is what the state changed since the previous Changes: what Disk
// must write, in the same transaction as the raft log, for the applied state
// to match Meta.Index.
type Changes struct {
	// Reset says the state was replaced (a snapshot was installed): drop
	// every saved key before writing Put.
	Reset bool
	// Meta is the whole small part of the state (index, epoch, members).
	Meta StateMeta
	// Put holds keys written, sorted; Delete keys removed, sorted.
	Put    []KV
	Delete []string
}

// takeChanges returns the journal and clears it; nil if nothing changed.
func (s *State) takeChanges() *Changes {
	if !s.metaDirt && !s.reset && len(s.dirty) == 0 {
		return nil
	}
	ch := &Changes{Reset: s.reset, Meta: s.meta()}
	if s.reset {
		for _, k := range slices.Sorted(maps.Keys(s.kv)) {
			ch.Put = append(ch.Put, KV{Key: k, Item: s.kv[k]})
		}
	} else {
		for _, k := range slices.Sorted(maps.Keys(s.dirty)) {
			if it, ok := s.kv[k]; ok {
				ch.Put = append(ch.Put, KV{Key: k, Item: it})
			} else {
				ch.Delete = append(ch.Delete, k)
			}
		}
	}
	clear(s.dirty)
	s.reset, s.metaDirt = false, false
	return ch
}

// applyChanges replays Changes onto s (how MemDisk keeps its copy).
func (s *State) applyChanges(ch *Changes) error {
	s.keysOK = false
	if ch.Reset {
		clear(s.kv)
	}
	if err := s.setMeta(ch.Meta); err != nil {
		return err
	}
	for _, kv := range ch.Put {
		kv.Item.Value = bytes.Clone(kv.Item.Value)
		s.kv[kv.Key] = kv.Item
	}
	for _, k := range ch.Delete {
		delete(s.kv, k)
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
