package agents

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCodeStringAndRecovery(t *testing.T) {
	tests := []struct {
		code     Code
		name     string
		recovery Recovery
	}{
		{CodeOK, "OK", RecoverySoft},
		{CodeErrGeneric, "ERR_GENERIC", RecoverySoft},
		{CodeErrArgs, "ERR_ARGS", RecoveryHard},
		{CodeErrUnimplemented, "ERR_UNIMPLEMENTED", RecoveryHard},
		{CodeErrPerm, "ERR_PERM", RecoveryHard},
		{CodeErrInstalled, "ERR_INSTALLED", RecoveryHard},
		{CodeErrConfigured, "ERR_CONFIGURED", RecoveryFatal},
		{CodeNotRunning, "NOT_RUNNING", RecoverySoft},
		{CodeRunningPromoted, "RUNNING_PROMOTED", RecoverySoft},
		{CodeFailedPromoted, "FAILED_PROMOTED", RecoverySoft},
		{CodeDegraded, "DEGRADED", RecoverySoft},
		{CodeDegradedPromoted, "DEGRADED_PROMOTED", RecoverySoft},
		{CodeTimeout, "TIMEOUT", RecoverySoft},
		{CodeCanceled, "CANCELED", RecoveryNone},
		{CodeNotFound, "NOT_FOUND", RecoveryHard},
		{Code(42), "Code(42)", RecoverySoft},
	}
	for i, tt := range tests {
		if got := tt.code.String(); got != tt.name {
			t.Errorf("%d: String() = %q, want %q", i, got, tt.name)
		}
		if got := tt.code.Recovery(); got != tt.recovery {
			t.Errorf("%d: %v.Recovery() = %v, want %v", i, tt.code, got, tt.recovery)
		}
	}
	for _, c := range []Code{CodeTimeout, CodeCanceled, CodeNotFound} {
		if c >= 0 && c <= 255 {
			t.Errorf("%v = %d is a possible exit status", c, int(c))
		}
	}
}

func TestParseSpec(t *testing.T) {
	tests := []struct {
		spec             string
		class, prov, typ string
		wantErr          error
		wantErrContains  string
	}{
		{"ocf:heartbeat:Dummy", "ocf", "heartbeat", "Dummy", nil, ""},
		{"ocf:pacemaker:Stateful", "ocf", "pacemaker", "Stateful", nil, ""},
		{"vigil:dummy", "vigil", "", "dummy", nil, ""},
		{"vigil:process", "vigil", "", "process", nil, ""},
		{"ocf:Dummy", "", "", "", ErrBadSpec, "needs ocf:provider:type"},
		{"vigil:x:y", "", "", "", ErrBadSpec, "needs vigil:type"},
		{"lsb:ntp", "", "", "", ErrUnknownAgent, `unknown class "lsb"`},
		{"ocf:../etc:passwd", "", "", "", ErrBadSpec, ""},
		{"ocf:heartbeat:a/b", "", "", "", ErrBadSpec, ""},
		{"", "", "", "", ErrBadSpec, ""},
		{"ocf::Dummy", "", "", "", ErrBadSpec, ""},
	}
	for i, tt := range tests {
		c, p, ty, err := ParseSpec(tt.spec)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantErrContains) {
				t.Errorf("%d: ParseSpec(%q) err = %v, want %v containing %q", i, tt.spec, err, tt.wantErr, tt.wantErrContains)
			}
			continue
		}
		if err != nil || c != tt.class || p != tt.prov || ty != tt.typ {
			t.Errorf("%d: ParseSpec(%q) = %q %q %q %v", i, tt.spec, c, p, ty, err)
		}
	}
}

func TestParseOCFDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"20s", 20 * time.Second}, {"20", 20 * time.Second}, {"500ms", 500 * time.Millisecond},
		{"2min", 2 * time.Minute}, {"1m", time.Minute}, {"1h", time.Hour}, {"1.5s", 1500 * time.Millisecond},
		{"", 0}, {"abc", 0}, {"10x", 0}, {"0", 0},
	}
	for i, tt := range tests {
		if got := ParseOCFDuration(tt.in); got != tt.want {
			t.Errorf("%d: ParseOCFDuration(%q) = %v, want %v", i, tt.in, got, tt.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	// comm may contain spaces and parentheses.
	line := "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10"
	p, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if p.state != 'S' || p.ppid != 1 || p.pgid != 1234 || p.start != 987654 {
		t.Fatalf("parseStat = %+v", p)
	}
}
