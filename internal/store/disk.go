package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Disk is the node's durable storage: the raft log, hard state and latest
// snapshot, and the applied state machine with its applied index. Save writes
// one Update atomically, so the applied state and the log it came from never
// disagree after a crash (etcd's consistent index: on restart only entries
// past the saved applied index are applied again).
//
// Any error from a Disk is fatal to the node: Core returns it and the shell
// stops.
type Disk interface {
	// Load returns everything saved; a new disk returns an empty Persisted
	// (IsEmpty reports true).
	Load() (*Persisted, error)
	// Save applies u atomically and durably; once it returns nil, nothing
	// in u may be lost.
	Save(u *Update) error
	// Close releases the disk.
	Close() error
}

// Persisted is what Disk.Load returns.
type Persisted struct {
	// HardState is raft's term, vote and commit; nil if never saved.
	HardState *raftpb.HardState
	// Snapshot is the latest snapshot; nil if none.
	Snapshot *raftpb.Snapshot
	// Entries are the log entries after the snapshot, in index order.
	Entries []*raftpb.Entry
	// State is the applied state machine; State.Index() is the applied
	// index. Never nil.
	State *State
}

// IsEmpty reports whether nothing was ever saved.
func (p *Persisted) IsEmpty() bool {
	return raft.IsEmptyHardState(p.HardState) && raft.IsEmptySnap(p.Snapshot) &&
		len(p.Entries) == 0 && p.State.Index() == 0
}

// Update is one atomic write. Save applies its parts in field order.
type Update struct {
	// Snapshot, when set, was received from the leader: it replaces the
	// whole log (every saved entry is dropped) and becomes the latest
	// snapshot.
	Snapshot *raftpb.Snapshot
	// Entries are appended; an entry at index i replaces any saved entry at
	// index i or later (raft may overwrite an uncommitted suffix).
	Entries []*raftpb.Entry
	// HardState, when set, replaces the saved one.
	HardState *raftpb.HardState
	// Applied, when set, brings the saved state machine up to
	// Applied.Meta.Index.
	Applied *Changes
	// Compact, when set, is a snapshot made on this node from its own
	// applied state: it becomes the latest snapshot, and entries up to its
	// index are dropped (those after it are kept).
	Compact *raftpb.Snapshot
}

func (u *Update) empty() bool {
	return u.Snapshot == nil && len(u.Entries) == 0 && u.HardState == nil && u.Applied == nil && u.Compact == nil
}

// MemDisk is an in-memory Disk for tests and the simulator. It copies what it
// is given, so a simulated crash (drop the Core or Node, keep the MemDisk,
// start a new one on it) loses nothing Save returned for. Close is a no-op so
// the same MemDisk can be loaded again. Safe for concurrent use.
type MemDisk struct {
	mu    sync.Mutex
	hs    *raftpb.HardState
	snap  *raftpb.Snapshot
	ents  []*raftpb.Entry
	state *State
	saves int
}

// NewMemDisk returns an empty MemDisk.
func NewMemDisk() *MemDisk { return &MemDisk{state: NewState()} }

// Load implements Disk.
func (d *MemDisk) Load() (*Persisted, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := &Persisted{State: d.state.Clone()}
	if d.hs != nil {
		p.HardState = proto.CloneOf(d.hs)
	}
	if d.snap != nil {
		p.Snapshot = proto.CloneOf(d.snap)
	}
	for _, e := range d.ents {
		p.Entries = append(p.Entries, proto.CloneOf(e))
	}
	return p, nil
}

// Save implements Disk.
func (d *MemDisk) Save(u *Update) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if u.Snapshot != nil {
		d.snap = proto.CloneOf(u.Snapshot)
		d.ents = nil
	}
	if len(u.Entries) > 0 {
		first := u.Entries[0].GetIndex()
		i := 0
		for i < len(d.ents) && d.ents[i].GetIndex() < first {
			i++
		}
		d.ents = d.ents[:i:i]
		for _, e := range u.Entries {
			d.ents = append(d.ents, proto.CloneOf(e))
		}
	}
	if u.HardState != nil {
		d.hs = proto.CloneOf(u.HardState)
	}
	if u.Applied != nil {
		if err := d.state.applyChanges(u.Applied); err != nil {
			return fmt.Errorf("memdisk: save applied state: %w", err)
		}
	}
	if u.Compact != nil {
		d.snap = proto.CloneOf(u.Compact)
		at := u.Compact.GetMetadata().GetIndex()
		i := 0
		for i < len(d.ents) && d.ents[i].GetIndex() <= at {
			i++
		}
		d.ents = append([]*raftpb.Entry(nil), d.ents[i:]...)
	}
	d.saves++
	return nil
}

// Close implements Disk; MemDisk stays usable.
func (d *MemDisk) Close() error { return nil }

// Saves returns how many Updates were saved (for tests).
func (d *MemDisk) Saves() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.saves
}

// On-disk layout of BoltDisk: one bbolt file, DiskFile in the data dir.
//
//	meta   "format"    -> decimal FormatVersion
//	raft   "hardstate" -> raftpb.HardState (protobuf)
//	       "snapshot"  -> raftpb.Snapshot (protobuf; Data = State.Marshal)
//	log    uint64 BE index -> raftpb.Entry (protobuf)
//	state  "meta"      -> StateMeta (JSON: v, applied index, epoch, members, retired IDs)
//	kv     key         -> Item (JSON)
//
// The "state" and "kv" buckets are written in the same transaction as the log
// entries they were applied from.
const DiskFile = "store.db"

var (
	bktMeta  = []byte("meta")
	bktRaft  = []byte("raft")
	bktLog   = []byte("log")
	bktState = []byte("state")
	bktKV    = []byte("kv")

	keyFormat    = []byte("format")
	keyHardState = []byte("hardstate")
	keySnapshot  = []byte("snapshot")
	keyMeta      = []byte("meta")
)

// BoltDisk is the bbolt Disk.
type BoltDisk struct {
	db *bolt.DB
}

// OpenBoltDisk opens (creating if needed) DiskFile in dir.
func OpenBoltDisk(dir string) (*BoltDisk, error) {
	path := filepath.Join(dir, DiskFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktMeta, bktRaft, bktLog, bktState, bktKV} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bktMeta)
		if v := meta.Get(keyFormat); v != nil {
			var f int
			if _, err := fmt.Sscan(string(v), &f); err != nil || f > FormatVersion {
				return fmt.Errorf("format %q, this binary knows up to %d", v, FormatVersion)
			}
			return nil
		}
		return meta.Put(keyFormat, fmt.Appendf(nil, "%d", FormatVersion))
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: init %s: %w", path, err)
	}
	return &BoltDisk{db: db}, nil
}

// Load implements Disk.
func (d *BoltDisk) Load() (*Persisted, error) {
	p := &Persisted{State: NewState()}
	err := d.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bktRaft)
		if v := rb.Get(keyHardState); v != nil {
			p.HardState = &raftpb.HardState{}
			if err := proto.Unmarshal(v, p.HardState); err != nil {
				return fmt.Errorf("hard state: %w", err)
			}
		}
		if v := rb.Get(keySnapshot); v != nil {
			p.Snapshot = &raftpb.Snapshot{}
			if err := proto.Unmarshal(v, p.Snapshot); err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
		}
		err := tx.Bucket(bktLog).ForEach(func(k, v []byte) error {
			e := &raftpb.Entry{}
			if err := proto.Unmarshal(v, e); err != nil {
				return fmt.Errorf("entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			p.Entries = append(p.Entries, e)
			return nil
		})
		if err != nil {
			return err
		}
		if v := tx.Bucket(bktState).Get(keyMeta); v != nil {
			var m StateMeta
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("state meta: %w", err)
			}
			if err := p.State.setMeta(m); err != nil {
				return err
			}
		}
		return tx.Bucket(bktKV).ForEach(func(k, v []byte) error {
			var it Item
			if err := json.Unmarshal(v, &it); err != nil {
				return fmt.Errorf("key %q: %w", k, err)
			}
			p.State.kv[string(k)] = it
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: load %s: %w", d.db.Path(), err)
	}
	return p, nil
}

func idxKey(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// Save implements Disk: one bbolt transaction, synced on commit.
func (d *BoltDisk) Save(u *Update) error {
	if u.empty() {
		return nil
	}
	err := d.db.Update(func(tx *bolt.Tx) error {
		rb, lb := tx.Bucket(bktRaft), tx.Bucket(bktLog)
		if u.Snapshot != nil {
			if err := putProto(rb, keySnapshot, u.Snapshot); err != nil {
				return err
			}
			if err := deleteFrom(lb, 0); err != nil {
				return err
			}
		}
		if len(u.Entries) > 0 {
			if err := deleteFrom(lb, u.Entries[0].GetIndex()); err != nil {
				return err
			}
			for _, e := range u.Entries {
				b, err := proto.Marshal(e)
				if err != nil {
					return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
				}
				if err := lb.Put(idxKey(e.GetIndex()), b); err != nil {
					return err
				}
			}
		}
		if u.HardState != nil {
			if err := putProto(rb, keyHardState, u.HardState); err != nil {
				return err
			}
		}
		if u.Applied != nil {
			if err := saveChanges(tx, u.Applied); err != nil {
				return err
			}
		}
		if u.Compact != nil {
			if err := putProto(rb, keySnapshot, u.Compact); err != nil {
				return err
			}
			if err := deleteThrough(lb, u.Compact.GetMetadata().GetIndex()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: save %s: %w", d.db.Path(), err)
	}
	return nil
}

func saveChanges(tx *bolt.Tx, ch *Changes) error {
	kb := tx.Bucket(bktKV)
	if ch.Reset {
		if err := tx.DeleteBucket(bktKV); err != nil {
			return err
		}
		var err error
		if kb, err = tx.CreateBucket(bktKV); err != nil {
			return err
		}
	}
	mb, err := json.Marshal(ch.Meta)
	if err != nil {
		return fmt.Errorf("state meta: %w", err)
	}
	if err := tx.Bucket(bktState).Put(keyMeta, mb); err != nil {
		return err
	}
	for _, kv := range ch.Put {
		b, err := json.Marshal(kv.Item)
		if err != nil {
			return fmt.Errorf("key %q: %w", kv.Key, err)
		}
		if err := kb.Put([]byte(kv.Key), b); err != nil {
			return fmt.Errorf("key %q: %w", kv.Key, err)
		}
	}
	for _, k := range ch.Delete {
		if err := kb.Delete([]byte(k)); err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
	}
	return nil
}

func putProto(b *bolt.Bucket, k []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("%s: %w", k, err)
	}
	return b.Put(k, v)
}

// deleteFrom drops log entries at index >= from.
func deleteFrom(b *bolt.Bucket, from uint64) error {
	c := b.Cursor()
	for k, _ := c.Seek(idxKey(from)); k != nil; k, _ = c.Seek(idxKey(from)) {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// deleteThrough drops log entries at index <= to.
func deleteThrough(b *bolt.Bucket, to uint64) error {
	c := b.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= to; k, _ = c.First() {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Close implements Disk.
func (d *BoltDisk) Close() error {
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", d.db.Path(), err)
	}
	return nil
}
