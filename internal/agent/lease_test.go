package agent

import (
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/lease"
)

// The loss report rides after the two quorum bytes; a reader takes an
// Info without one as an empty report and ignores one it cannot read.
func TestDecodeLossReport(t *testing.T) {
	ms, err := lease.NewMemberSet([]string{"n1", "n2", "n3"})
	if err != nil {
		t.Fatal(err)
	}
	rep := lease.LossReport{AsOf: 5 * time.Second, Lost: []lease.Loss{{Node: "n3", Silence: 1500 * time.Millisecond}}}
	enc, err := ms.AppendReport([]byte{infoVersion, infoQuorate}, rep)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := decodeLossReport(ms, enc)
	if !ok || got.AsOf != rep.AsOf || len(got.Lost) != 1 || got.Lost[0] != rep.Lost[0] {
		t.Fatalf("decoded %+v %v", got, ok)
	}
	if got, ok := decodeLossReport(ms, []byte{infoVersion, 0}); !ok || len(got.Lost) != 0 {
		t.Fatalf("plain info: %+v %v", got, ok)
	}
	other, _ := lease.NewMemberSet([]string{"n1", "n2", "n4"})
	for name, info := range map[string][]byte{
		"other members": enc,
		"short":         {infoVersion},
		"newer version": {infoVersion + 1, 0},
		"garbage":       {infoVersion, 0, 0xff, 1, 2},
	} {
		set := ms
		if name == "other members" {
			set = other
		}
		if _, ok := decodeLossReport(set, info); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, ok := decodeLossReport(nil, enc); ok {
		t.Error("decoded without a member set")
	}
}

func TestSelfStopMargin(t *testing.T) {
	if m := selfStopMargin(time.Second); m <= 0 || m >= time.Second/2 {
		t.Fatalf("margin %s for a 1s lease", m)
	}
}
