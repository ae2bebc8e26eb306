package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/model"
)

// The progress bar of `resource move --wait`: share of memory sent, bytes
// sent and left, dirty rate, throughput and ETA.
func TestProgressLine(t *testing.T) {
	cases := []struct {
		p    api.MigrationProgress
		want string
	}{
		{api.MigrationProgress{Status: "active", TotalBytes: 128 << 20, TransferredBytes: 64 << 20, RemainingBytes: 64 << 20, DirtyPagesRate: 120, ThroughputMbps: 800},
			"[#####-----]  50%  64.0 MiB sent, 64.0 MiB left, dirty 120 pages/s, 800 Mbit/s, ETA 700ms"},
		{api.MigrationProgress{Status: "completed", Done: true, TotalBytes: 128 << 20, TransferredBytes: 130 << 20, TotalTime: time.Second},
			"[##########] 100%  130.0 MiB sent, 0 B left, dirty 0 pages/s, 0 Mbit/s (completed)"},
		{api.MigrationProgress{Status: "setup"},
			"[----------]   0%  0 B sent, 0 B left, dirty 0 pages/s, 0 Mbit/s (setup)"},
	}
	for i, c := range cases {
		if got := progressLine(c.p, 10); got != c.want {
			t.Errorf("#%d:\n got %q\nwant %q", i, got, c.want)
		}
	}
}

// fakeMove serves a live migration of vm1 from n1 to n2 to waitMove: the
// answering node's migration record steps through states, one per poll
// (the last state stays), and the source answers its progress.
type fakeMove struct {
	mu       sync.Mutex
	polls    int
	states   []fakeMoveState
	progress api.MigrationProgress
}

type fakeMoveState struct {
	active  bool
	step    string
	done    bool   // the source's progress says completed
	n2State string // vm1's instance state on n2 ("" = none)
}

func (f *fakeMove) state() fakeMoveState {
	return f.states[min(max(f.polls-1, 0), len(f.states)-1)]
}

func startFakeMove(t *testing.T, f *fakeMove) *api.Client {
	t.Helper()
	started := time.Unix(1000, 0)
	src := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		p := api.MigrationProgress{Started: started, Status: "active", TotalBytes: 128 << 20, TransferredBytes: 64 << 20, RemainingBytes: 64 << 20, ThroughputMbps: 800}
		if f.state().done {
			p = api.MigrationProgress{Started: started, Status: "completed", Done: true, TotalBytes: 128 << 20, TransferredBytes: 60 << 20,
				TotalTime: 431 * time.Millisecond, Downtime: 7 * time.Millisecond}
		}
		_ = json.NewEncoder(w).Encode(api.MigrationStatus{Resource: "vm1", Node: "n1", Progress: &p})
	}))
	t.Cleanup(src.Close)
	srcAddr := strings.TrimPrefix(src.URL, "https://")
	dc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch r.URL.Path {
		case "/v1/resources/vm1/migration":
			f.polls++
			st := f.state()
			ms := api.MigrationStatus{Resource: "vm1", Node: "n3", Active: st.active}
			if st.active {
				ms.Source, ms.Target, ms.Step, ms.Started, ms.SourceAPI = "n1", "n2", st.step, started, []string{srcAddr}
			}
			_ = json.NewEncoder(w).Encode(ms)
		case "/v1/resources/vm1":
			d := api.ResourceDetail{Instances: []api.ResourceStatus{}}
			if st := f.state(); st.n2State != "" {
				d.Instances = append(d.Instances, api.ResourceStatus{Instance: "vm1", Resource: "vm1", State: st.n2State, Node: "n2"})
			} else {
				d.Instances = append(d.Instances, api.ResourceStatus{Instance: "vm1", Resource: "vm1", State: "started", Node: "n1"})
			}
			_ = json.NewEncoder(w).Encode(d)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(dc.Close)
	tlsConf := dc.Client().Transport.(*http.Transport).TLSClientConfig
	return api.NewClient([]string{strings.TrimPrefix(dc.URL, "https://")}, "token", tlsConf)
}

// The wait ends as soon as the target is recorded started in the finish
// step (only the finish's success records that), without waiting for the
// DC's next round to delete the migration record (the fake never deletes
// it).
func TestWaitMoveEndsWhenTheFinishIsRecorded(t *testing.T) {
	f := &fakeMove{states: []fakeMoveState{
		{active: true, step: model.MigratePrepare},
		{active: true, step: model.MigrateTransfer},
		{active: true, step: model.MigrateTransfer, done: true},
		{active: true, step: model.MigrateFinish, done: true, n2State: "migrating"},
		{active: true, step: model.MigrateFinish, done: true, n2State: "migrating"},
		{active: true, step: model.MigrateFinish, done: true, n2State: "started"},
	}}
	c := startFakeMove(t, f)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := waitMove(ctx, &out, c, "vm1", "n2"); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "vm1 live-migrated to n2 in 431ms (downtime 7ms") {
		t.Fatalf("output:\n%s", out.String())
	}
	f.mu.Lock()
	polls := f.polls
	f.mu.Unlock()
	if polls != len(f.states) {
		t.Fatalf("%d polls, want %d: the wait should end at the first poll that sees n2 started", polls, len(f.states))
	}
}

// A move by a stop and a start (no live migration): the wait ends when the
// resource runs on the node, reporting no migration.
func TestWaitMoveWithoutLiveMigration(t *testing.T) {
	f := &fakeMove{states: []fakeMoveState{{}, {}, {n2State: "starting"}, {n2State: "started"}}}
	c := startFakeMove(t, f)
	var out bytes.Buffer
	if err := waitMove(t.Context(), &out, c, "vm1", "n2"); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if got := out.String(); got != "vm1 runs on n2\n" {
		t.Fatalf("output %q", got)
	}
}

// The poll interval: slow while the progress bar is all there is to show,
// fast near the end of the migration followed.
func TestMovePoll(t *testing.T) {
	seen := &api.MigrationStatus{Active: true, Step: model.MigrateTransfer}
	cases := []struct {
		seen *api.MigrationStatus
		p    api.MigrationProgress
		want time.Duration
	}{
		{nil, api.MigrationProgress{}, moveWaitPoll},
		{seen, api.MigrationProgress{}, moveWaitPoll},
		{seen, api.MigrationProgress{Status: "active", RemainingBytes: 100 << 20, ThroughputMbps: 800}, moveWaitPoll},
		{seen, api.MigrationProgress{Status: "active", RemainingBytes: 1 << 20, ThroughputMbps: 800}, moveWaitFast},
		{seen, api.MigrationProgress{Status: "completed", Done: true}, moveWaitFast},
		{&api.MigrationStatus{Active: true, Step: model.MigrateFinish}, api.MigrationProgress{}, moveWaitFast},
	}
	for i, c := range cases {
		if got := movePoll(c.seen, c.p); got != c.want {
			t.Errorf("#%d: %v, want %v", i, got, c.want)
		}
	}
}

// A migration that fails says where the VM is: still on its source when
// the transfer had not completed, started afresh when it had (a failed
// finish).
func TestWaitMoveFailure(t *testing.T) {
	cases := []struct {
		states []fakeMoveState
		want   string
	}{
		{[]fakeMoveState{{active: true, step: model.MigrateTransfer}, {active: true, step: model.MigrateAbort}},
			"keeps running on n1"},
		{[]fakeMoveState{{active: true, step: model.MigrateTransfer}, {active: true, step: model.MigrateFinish, done: true}, {active: true, step: model.MigrateAbort, done: true}},
			"failed after n1 handed it over"},
	}
	for i, c := range cases {
		f := &fakeMove{states: c.states}
		cl := startFakeMove(t, f)
		var out bytes.Buffer
		err := waitMove(t.Context(), &out, cl, "vm1", "n2")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("#%d: %v, want %q\n%s", i, err, c.want, out.String())
		}
	}
}
