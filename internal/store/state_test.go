package store

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func threeMembers() []Member {
	return []Member{
		{Name: "n1", ID: 1, Links: []string{"10.0.0.1:7000"}, Role: RoleVoter},
		{Name: "n2", ID: 2, Links: []string{"10.0.0.2:7000"}, Role: RoleVoter},
		{Name: "n3", ID: 3, Links: []string{"10.0.0.3:7000"}, Role: RoleVoter},
	}
}

// bootState is the state Bootstrap writes for members.
func bootState(members []Member) *State {
	s := NewState()
	for _, m := range members {
		s.members[m.Name] = m
	}
	s.index, s.epoch = 1, 1
	return s
}

func TestStateApply(t *testing.T) {
	type step struct {
		cmd       Command
		wantErr   error
		wantEpoch uint64
	}
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, s *State)
	}{
		{"put bumps epoch", []step{{Put{"cfg/a", []byte("1")}, nil, 2}}, func(t *testing.T, s *State) {
			it, ok := s.Get("cfg/a")
			if !ok || string(it.Value) != "1" || it.Version != 1 || it.Index != 2 {
				t.Errorf("cfg/a = %+v, %v", it, ok)
			}
		}},
		{"status keys do not bump epoch", []step{
			{Put{"status/n1", []byte("up")}, nil, 1},
			{Delete{"status/n1"}, nil, 1},
		}, nil},
		{"rewrite bumps version", []step{
			{Put{"k", []byte("1")}, nil, 2},
			{Put{"k", []byte("2")}, nil, 3},
		}, func(t *testing.T, s *State) {
			if it, _ := s.Get("k"); it.Version != 2 || string(it.Value) != "2" || it.Index != 3 {
				t.Errorf("k = %+v", it)
			}
		}},
		{"delete of a missing key changes nothing", []step{{Delete{"nope"}, nil, 1}}, nil},
		{"delete", []step{{Put{"k", nil}, nil, 2}, {Delete{"k"}, nil, 3}}, func(t *testing.T, s *State) {
			if _, ok := s.Get("k"); ok {
				t.Error("k still there")
			}
		}},
		{"empty key rejected", []step{{Put{"", []byte("x")}, ErrBadCommand, 1}}, nil},
		{"txn with matching epoch", []step{
			{Txn{IfEpoch: 1, Ops: []Op{{Key: "a", Value: []byte("1")}, {Key: "status/a", Value: []byte("x")}}}, nil, 2},
		}, func(t *testing.T, s *State) {
			if s.Len() != 2 {
				t.Errorf("len %d", s.Len())
			}
		}},
		{"txn with stale epoch rejected atomically", []step{
			{Put{"a", []byte("1")}, nil, 2},
			{Txn{IfEpoch: 1, Ops: []Op{{Key: "b", Value: []byte("1")}}}, ErrEpochMismatch, 2},
		}, func(t *testing.T, s *State) {
			if _, ok := s.Get("b"); ok {
				t.Error("b written by a rejected txn")
			}
		}},
		{"txn of status keys only", []step{{Txn{Ops: []Op{{Key: "status/x"}, {Key: "status/y", Delete: true}}}, nil, 1}}, nil},
		{"add learner", []step{{AddNode{Member{Name: "n4", ID: 4, Role: RoleLearner}}, nil, 2}}, func(t *testing.T, s *State) {
			cs := s.ConfState()
			if len(cs.Voters) != 3 || len(cs.Learners) != 1 || cs.Learners[0] != 4 {
				t.Errorf("conf state %v", cs)
			}
		}},
		{"add duplicate name", []step{{AddNode{Member{Name: "n1", ID: 9, Role: RoleVoter}}, ErrNodeExists, 1}}, nil},
		{"add duplicate id", []step{{AddNode{Member{Name: "n9", ID: 1, Role: RoleVoter}}, ErrNodeExists, 1}}, nil},
		{"add bad role", []step{{AddNode{Member{Name: "n9", ID: 9, Role: "boss"}}, ErrBadCommand, 1}}, nil},
		{"remove then re-add the id", []step{
			{RemoveNode{"n3"}, nil, 2},
			{AddNode{Member{Name: "n3", ID: 3, Role: RoleVoter}}, ErrIDRetired, 2},
			{AddNode{Member{Name: "n3", ID: 30, Role: RoleVoter}}, nil, 3},
		}, nil},
		{"remove unknown", []step{{RemoveNode{"zz"}, ErrUnknownNode, 1}}, nil},
		{"remove last voter", []step{
			{RemoveNode{"n1"}, nil, 2},
			{RemoveNode{"n2"}, nil, 3},
			{RemoveNode{"n3"}, ErrLastVoter, 3},
		}, nil},
		{"promote", []step{
			{AddNode{Member{Name: "n4", ID: 4, Role: RoleLearner}}, nil, 2},
			{Promote{"n4"}, nil, 3},
			{Promote{"n4"}, ErrNotLearner, 3},
		}, func(t *testing.T, s *State) {
			if m, _ := s.Member("n4"); m.Role != RoleVoter {
				t.Errorf("n4 role %s", m.Role)
			}
		}},
		{"witness votes", []step{{AddNode{Member{Name: "w", ID: 7, Role: RoleWitness}}, nil, 2}}, func(t *testing.T, s *State) {
			if cs := s.ConfState(); len(cs.Voters) != 4 {
				t.Errorf("voters %v", cs.Voters)
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := bootState(threeMembers())
			for j, st := range tt.steps {
				idx := s.Index() + 1
				epoch, err := s.Apply(idx, st.cmd)
				if !errors.Is(err, st.wantErr) || (err == nil) != (st.wantErr == nil) {
					t.Fatalf("#%d step %d: err %v, want %v", i, j, err, st.wantErr)
				}
				if epoch != st.wantEpoch || s.Epoch() != st.wantEpoch {
					t.Fatalf("#%d step %d: epoch %d/%d, want %d", i, j, epoch, s.Epoch(), st.wantEpoch)
				}
				if s.Index() != idx {
					t.Fatalf("#%d step %d: index %d, want %d", i, j, s.Index(), idx)
				}
			}
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
}

func TestStateApplyIsIdempotent(t *testing.T) {
	s := bootState(threeMembers())
	if _, err := s.Apply(2, Put{"a", []byte("1")}); err != nil {
		t.Fatal(err)
	}
	// Replaying an applied index (after a crash) changes nothing.
	if _, err := s.Apply(2, Put{"a", []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if it, _ := s.Get("a"); string(it.Value) != "1" || s.Epoch() != 2 {
		t.Errorf("after replay: %+v epoch %d", it, s.Epoch())
	}
}

func TestStateSnapshotDeterministic(t *testing.T) {
	a, b := bootState(threeMembers()), bootState(threeMembers())
	// The same commands in different map-insertion histories.
	for i, k := range []string{"z", "a", "m", "status/q"} {
		if _, err := a.Apply(uint64(i+2), Put{k, []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range []string{"z", "a", "m", "status/q"} {
		if _, err := b.Apply(uint64(i+2), Put{k, []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	ab, _ := a.Marshal()
	bb, _ := b.Marshal()
	if !bytes.Equal(ab, bb) {
		t.Fatalf("encodings differ:\n%s\n%s", ab, bb)
	}
	c, err := UnmarshalState(ab)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Equal(a) || c.Index() != 5 || c.Epoch() != 4 {
		t.Errorf("round trip: %s", ab)
	}
	var keys []string
	c.Range("", func(k string, _ Item) bool { keys = append(keys, k); return true })
	if want := []string{"a", "m", "status/q", "z"}; !equalStrings(keys, want) {
		t.Errorf("Range order %v, want %v", keys, want)
	}
}

func TestStateRefusesNewerFormat(t *testing.T) {
	if _, err := UnmarshalState([]byte(`{"v":99,"index":1}`)); err == nil {
		t.Fatal("want error for a newer format")
	}
	if _, _, _, err := decodeCommand([]byte(`{"v":99,"op":"put","key":"a"}`)); !errors.Is(err, errFormat) {
		t.Fatalf("decode newer command: %v", err)
	}
}

func TestCommandCodecRoundTrip(t *testing.T) {
	cmds := []Command{
		Put{"a", []byte{0, 1, 2}},
		Delete{"a"},
		Txn{IfEpoch: 3, Ops: []Op{{Key: "a", Value: []byte("x")}, {Key: "b", Delete: true}}},
		AddNode{Member{Name: "n4", ID: 4, Links: []string{"h:1"}, Role: RoleLearner}},
		RemoveNode{"n4"},
		Promote{"n4"},
	}
	for i, c := range cmds {
		b, err := encodeCommand(7, uint64(i+1), c)
		if err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		from, id, got, err := decodeCommand(b)
		if err != nil || from != 7 || id != uint64(i+1) {
			t.Fatalf("#%d: %v %d %d", i, err, from, id)
		}
		b2, _ := encodeCommand(7, uint64(i+1), got)
		if !bytes.Equal(b, b2) {
			t.Errorf("#%d: %s != %s", i, b, b2)
		}
	}
}

func TestTargetVoters(t *testing.T) {
	for i, tt := range []struct{ n, want int }{{0, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 3}, {5, 5}, {9, 5}} {
		if got := TargetVoters(tt.n); got != tt.want {
			t.Errorf("#%d: TargetVoters(%d) = %d, want %d", i, tt.n, got, tt.want)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Range walks exactly the keys with the prefix, in order, whatever
// sequence of puts and deletes came before (the sorted index is rebuilt
// when the key set changes).
func TestRangeFollowsKeySetChanges(t *testing.T) {
	s := NewState()
	idx := uint64(1)
	put := func(k string) { s.put(idx, k, []byte(k)); idx++ }
	collect := func(prefix string) []string {
		var out []string
		s.Range(prefix, func(k string, _ Item) bool { out = append(out, k); return true })
		return out
	}
	for _, k := range []string{"b/2", "a/1", "b/1", "c/1"} {
		put(k)
	}
	if got := collect("b/"); !slices.Equal(got, []string{"b/1", "b/2"}) {
		t.Fatalf("#0 b/: %v", got)
	}
	s.del("b/1")
	put("b/0") // same key count as before: the index must still notice
	if got := collect("b/"); !slices.Equal(got, []string{"b/0", "b/2"}) {
		t.Fatalf("#1 after delete+put: %v", got)
	}
	if got := collect(""); !slices.Equal(got, []string{"a/1", "b/0", "b/2", "c/1"}) {
		t.Fatalf("#2 all: %v", got)
	}
	stop := 0
	s.Range("", func(string, Item) bool { stop++; return stop < 2 })
	if stop != 2 {
		t.Fatalf("#3 Range did not stop when fn returned false: %d calls", stop)
	}
}

// A Txn with If guards applies only when every key is at the stated
// version, and changes nothing otherwise.
func TestTxnCompare(t *testing.T) {
	s := NewState()
	if _, err := s.Apply(1, Put{Key: "status/nodes/n3", Value: []byte("boot1")}); err != nil {
		t.Fatal(err)
	}
	it, _ := s.Get("status/nodes/n3")
	tests := []struct {
		cmp []Cmp
		ok  bool
	}{
		{[]Cmp{{Key: "status/nodes/n3", Version: it.Version}}, true},
		{[]Cmp{{Key: "status/nodes/n3", Version: it.Version + 7}}, false},
		{[]Cmp{{Key: "status/absent", Version: 0}}, true},
		{[]Cmp{{Key: "status/absent", Version: 1}}, false},
	}
	for i, tt := range tests {
		c := s.Clone()
		_, err := c.Apply(2, Txn{Ops: []Op{{Key: "status/x", Value: []byte("1")}}, If: tt.cmp})
		if tt.ok != (err == nil) {
			t.Fatalf("#%d: err %v, want ok=%v", i, err, tt.ok)
		}
		if !tt.ok {
			if !errors.Is(err, ErrCompareFailed) {
				t.Fatalf("#%d: err %v, want ErrCompareFailed", i, err)
			}
			if _, found := c.Get("status/x"); found {
				t.Fatalf("#%d: a failed compare still wrote", i)
			}
		}
	}
	// The guard survives the wire encoding.
	b, err := encodeCommand(1, 2, Txn{Ops: []Op{{Key: "k", Value: []byte("v")}}, If: []Cmp{{Key: "k", Version: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, cmd, err := decodeCommand(b)
	if err != nil || len(cmd.(Txn).If) != 1 || cmd.(Txn).If[0].Version != 3 {
		t.Fatalf("decode: %+v %v", cmd, err)
	}
}
