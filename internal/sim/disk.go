package sim

import (
	"hash/fnv"
	"slices"

	"github.com/vigil-ha/vigil/internal/store"
)

// simDisk is a store.MemDisk that shows the checker every state change
// saved: the applied index, and the keys written with the raft index that
// wrote them. From these it keeps a fingerprint of the saved state (an XOR
// of per-key hashes, updated in O(changes)) and checks invariant 3: the
// same raft index wrote the same key and value on every node, the state at
// a given applied index has the same fingerprint everywhere, and the applied
// index on a disk never goes back.
//
// NB: only what Save returned is kept by MemDisk, so after a restart the
// Core must resume at exactly d.applied.
type simDisk struct {
	*store.MemDisk
	c   *Cluster
	idx int

	applied uint64
	epoch   uint64
	fp      uint64
	shadow  map[string]uint64 // key -> hash(key, item)
}

func newSimDisk(c *Cluster, idx int) *simDisk {
	return &simDisk{MemDisk: store.NewMemDisk(), c: c, idx: idx, shadow: map[string]uint64{}}
}

// Save implements store.Disk.
func (d *simDisk) Save(u *store.Update) error {
	if d.c.opts.bug == bugRotDisk && d.idx == 0 && u.Applied != nil && len(u.Applied.Put) > 0 && d.c.chance(0.05) {
		// Bit rot: what lands on disk differs from what was applied.
		rot := *u
		ch := *u.Applied
		ch.Put = slices.Clone(ch.Put)
		ch.Put[0].Item.Value = append(slices.Clone(ch.Put[0].Item.Value), '!')
		rot.Applied = &ch
		u = &rot
	}
	if err := d.MemDisk.Save(u); err != nil {
		return err
	}
	if u.Applied != nil {
		d.observe(u.Applied)
	}
	return nil
}

func itemHash(key string, it store.Item) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(it.Value)
	var b [16]byte
	for i := range 8 {
		b[i] = byte(it.Version >> (8 * i))
		b[8+i] = byte(it.Index >> (8 * i))
	}
	h.Write(b[:])
	return h.Sum64()
}

func valueHash(v []byte) uint64 {
	h := fnv.New64a()
	h.Write(v)
	return h.Sum64()
}

func (d *simDisk) observe(ch *store.Changes) {
	c := d.c
	name := c.n[d.idx].name
	if ch.Meta.Index < d.applied {
		c.violate(InvApplied, "%s: applied index went back from %d to %d", name, d.applied, ch.Meta.Index)
		return
	}
	if ch.Reset {
		clear(d.shadow)
		d.fp = 0
	}
	for _, kv := range ch.Put {
		at := kv.Item.Index
		ek, h := entryKey{index: at, key: kv.Key}, valueHash(kv.Item.Value)
		if prev, ok := c.entries[ek]; !ok {
			c.entries[ek] = h
		} else if prev != h {
			c.violate(InvApplied, "%s: index %d wrote %s=%q, elsewhere another value", name, at, kv.Key, kv.Item.Value)
			return
		}
		if old, ok := d.shadow[kv.Key]; ok {
			d.fp ^= old
		}
		h = itemHash(kv.Key, kv.Item)
		d.shadow[kv.Key] = h
		d.fp ^= h
	}
	for _, k := range ch.Delete {
		if old, ok := d.shadow[k]; ok {
			d.fp ^= old
			delete(d.shadow, k)
		}
	}
	if c.sys != nil {
		c.sys.changed(d.idx, ch)
	}
	d.applied, d.epoch = ch.Meta.Index, ch.Meta.Epoch
	s := stateFP{node: d.idx, fp: d.fp, epoch: d.epoch, keys: len(d.shadow)}
	if prev, ok := c.states[d.applied]; !ok {
		c.states[d.applied] = s
	} else if prev.fp != s.fp || prev.epoch != s.epoch || prev.keys != s.keys {
		c.violate(InvApplied, "state at index %d differs: %s has %d keys, epoch %d; %s has %d keys, epoch %d",
			d.applied, c.n[prev.node].name, prev.keys, prev.epoch, name, s.keys, s.epoch)
	}
}
