package lab

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Helpers for the chaos runner (internal/chaos): faults and samples that
// do not fail the test from a background goroutine, and random packet loss.

// TruthErr is Truth for background samplers: it returns the error instead
// of failing the test, so it may be called from any goroutine.
func (l *Lab) TruthErr(ids ...string) (TruthSample, error) { return l.sample(ids) }

// ResumeIfRunning SIGCONTs a paused host if its process still runs and
// reports whether it did. Unlike Resume it never fails the test: the host
// may have been powered off (fenced) meanwhile.
func (l *Lab) ResumeIfRunning(name string) bool {
	p := l.Node(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return false
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT)
	p.paused = false
	return true
}

// lossTable is the nftables table of Loss, beside the lab's own table (so
// that Partition, Drop and Heal leave it alone).
func (l *Lab) lossTable() string { return "inet vigil_lab_" + l.id + "_loss" }

// Loss drops pct percent (1 to 100) of the packets in and out of host
// name's link i at random (nftables numgen), in a table of its own in the
// host's namespace: the "lossy link" fault. It replaces the host's earlier
// Loss; ClearLoss ends it (Heal does not).
func (l *Lab) Loss(name string, link, pct int) {
	l.t.Helper()
	l.needNetns("Loss")
	p := l.checkLink(name, link)
	if pct < 1 || pct > 100 {
		l.t.Fatalf("lab: loss %d%%: want 1 to 100", pct)
	}
	t := l.lossTable()
	rules := fmt.Sprintf("table %s {}\ndelete table %s\ntable %s {\n"+
		"  chain input {\n    type filter hook input priority -10; policy accept;\n    iifname \"l%d\" numgen random mod 100 < %d drop\n  }\n"+
		"  chain output {\n    type filter hook output priority -10; policy accept;\n    oifname \"l%d\" numgen random mod 100 < %d drop\n  }\n}\n",
		t, t, t, link, pct, link, pct)
	p.mark("loss %d%% on link %d", pct, link)
	if err := run(rules, "ip", "netns", "exec", p.Netns, "nft", "-f", "-"); err != nil {
		l.t.Fatalf("lab: loss on %s: %v", name, err)
	}
}

// ClearLoss ends Loss on host name (a no-op without one).
func (l *Lab) ClearLoss(name string) {
	l.t.Helper()
	l.needNetns("ClearLoss")
	p := l.Node(name)
	t := l.lossTable()
	p.mark("loss cleared")
	if err := run(fmt.Sprintf("table %s {}\ndelete table %s\n", t, t), "ip", "netns", "exec", p.Netns, "nft", "-f", "-"); err != nil {
		l.t.Fatalf("lab: clear loss on %s: %v", name, err)
	}
}

// Retry runs a lab step, such as Heal, up to tries times until it does not
// fail, and fails the test only if the last try fails. A step fails by
// calling Fatal on the lab; here that ends the try instead of the test.
// It is for steps that race with the lab fence agent, which kills every
// process in a node's namespace when it powers the node off, the `nft` or
// `ip` a step runs there included. The steps must be idempotent.
func (l *Lab) Retry(what string, tries int, step func(*Lab)) {
	l.t.Helper()
	var last string
	for i := 0; i < tries; i++ {
		if last = l.try(step); last == "" {
			return
		}
		l.t.Logf("lab: %s: try %d of %d failed: %s", what, i+1, tries, last)
		time.Sleep(200 * time.Millisecond)
	}
	l.t.Fatalf("lab: %s: %s", what, last)
}

// try runs step with a view of the lab whose Fatal ends the step (a panic
// recovered here) and returns the failure, or "".
func (l *Lab) try(step func(*Lab)) (failed string) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(tryFatal)
			if !ok {
				panic(r)
			}
			failed = string(f)
		}
	}()
	step(&Lab{t: tryTB{l.t}, core: l.core})
	return ""
}

// tryTB is a testing.TB whose Fatal panics with a tryFatal (and Skip
// fails the try too); the rest goes to the test.
type tryTB struct{ testing.TB }

type tryFatal string

func (t tryTB) Fatal(args ...any)                 { panic(tryFatal(fmt.Sprint(args...))) }
func (t tryTB) Fatalf(format string, args ...any) { panic(tryFatal(fmt.Sprintf(format, args...))) }
func (t tryTB) FailNow()                          { panic(tryFatal("FailNow")) }
func (t tryTB) Skip(args ...any)                  { panic(tryFatal(fmt.Sprint(args...))) }
func (t tryTB) Skipf(format string, args ...any)  { panic(tryFatal(fmt.Sprintf(format, args...))) }
func (t tryTB) SkipNow()                          { panic(tryFatal("SkipNow")) }
