package store

import (
	"errors"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func ent(term, index uint64, data string) *raftpb.Entry {
	return &raftpb.Entry{Term: new(term), Index: new(index), Type: raftpb.EntryNormal.Enum(), Data: []byte(data)}
}

// diskScript saves a sequence of updates touching every part of a Disk and
// returns the state the disk must then hold.
func diskScript(t *testing.T, d Disk) *State {
	t.Helper()
	if err := Bootstrap(d, threeMembers()); err != nil {
		t.Fatal(err)
	}
	if err := Bootstrap(d, threeMembers()); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("second bootstrap: %v", err)
	}
	s := bootState(threeMembers())
	save := func(u *Update) {
		t.Helper()
		if err := d.Save(u); err != nil {
			t.Fatal(err)
		}
	}
	save(&Update{Entries: []*raftpb.Entry{ent(2, 2, "a"), ent(2, 3, "b"), ent(2, 4, "c")}})
	// Raft overwrites an uncommitted suffix.
	save(&Update{Entries: []*raftpb.Entry{ent(3, 4, "c2"), ent(3, 5, "d")}})
	s.Apply(2, Put{"k1", []byte("v1")})
	s.Apply(3, Put{"k2", []byte("v2")})
	s.Apply(4, Put{"status/x", []byte("up")})
	save(&Update{HardState: &raftpb.HardState{Term: new(uint64(3)), Vote: new(uint64(2)), Commit: new(uint64(4))}, Applied: s.takeChanges()})
	s.Apply(5, Delete{"k1"})
	data, _ := s.Marshal()
	snap := &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(5)), Term: new(uint64(3)), ConfState: s.ConfState()}}
	save(&Update{
		Entries:   []*raftpb.Entry{ent(3, 6, "e")},
		HardState: &raftpb.HardState{Term: new(uint64(3)), Vote: new(uint64(2)), Commit: new(uint64(5))},
		Applied:   s.takeChanges(),
		Compact:   snap,
	})
	return s
}

func checkLoaded(t *testing.T, p *Persisted, want *State) {
	t.Helper()
	if p.HardState.GetCommit() != 5 || p.HardState.GetVote() != 2 || p.HardState.GetTerm() != 3 {
		t.Errorf("hard state %v", p.HardState)
	}
	if p.Snapshot.GetMetadata().GetIndex() != 5 {
		t.Errorf("snapshot at %d", p.Snapshot.GetMetadata().GetIndex())
	}
	if len(p.Entries) != 1 || p.Entries[0].GetIndex() != 6 || string(p.Entries[0].GetData()) != "e" {
		t.Errorf("entries %v", p.Entries)
	}
	if !p.State.Equal(want) {
		a, _ := p.State.Marshal()
		b, _ := want.Marshal()
		t.Errorf("state\n got %s\nwant %s", a, b)
	}
}

func TestMemDiskRoundTrip(t *testing.T) {
	d := NewMemDisk()
	want := diskScript(t, d)
	p, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	checkLoaded(t, p, want)
}

func TestBoltDiskRestart(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenBoltDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := diskScript(t, d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = OpenBoltDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	p, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	checkLoaded(t, p, want)

	// A received snapshot replaces the whole log and the state.
	s := bootState(threeMembers())
	s.Apply(9, Put{"only", []byte("1")})
	s.reset = true
	data, _ := s.Marshal()
	snap := &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(9)), Term: new(uint64(4)), ConfState: s.ConfState()}}
	if err := d.Save(&Update{Snapshot: snap, Applied: s.takeChanges()}); err != nil {
		t.Fatal(err)
	}
	p, err = d.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 0 || !proto.Equal(p.Snapshot, snap) || !p.State.Equal(s) || p.State.Len() != 1 {
		t.Errorf("after snapshot install: %d entries, state len %d", len(p.Entries), p.State.Len())
	}
}
