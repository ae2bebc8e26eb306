package datastore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func bg() context.Context { return context.Background() }

// mustAcquire acquires, retrying when the machine was too slow (ErrSlow
// is a legitimate outcome on a loaded test machine; a retry then waits
// out our own tentative record).
func mustAcquire(t *testing.T, root, resource string, me Holder, opts Options) *Lease {
	t.Helper()
	l, _ := acquireRetrying(t, root, resource, me, opts)
	return l
}

func acquireRetrying(t *testing.T, root, resource string, me Holder, opts Options) (l *Lease, retried bool) {
	t.Helper()
	for try := 0; ; try++ {
		var err error
		l, err = Acquire(bg(), root, resource, me, opts)
		if errors.Is(err, ErrSlow) && try < 3 {
			t.Logf("retrying: %v", err)
			retried = true
			continue
		}
		if err != nil {
			t.Fatalf("acquire %s as %s: %v", resource, me.Node, err)
		}
		t.Cleanup(func() { l.Close() })
		return l, retried
	}
}

// acquireAtOnce acquires a lease that is free (absent, released, mine)
// and checks it did not wait for the lease time, unless it had to retry.
func acquireAtOnce(t *testing.T, root, resource string, me Holder, opts Options) *Lease {
	t.Helper()
	start := time.Now()
	l, retried := acquireRetrying(t, root, resource, me, opts)
	if d := time.Since(start); d >= opts.LeaseTime && !retried {
		t.Errorf("acquiring a free lease of %s took %v, a lease time", resource, d)
	}
	return l
}

func TestAcquireFreeLeaseAtOnceAndRenew(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	l := acquireAtOnce(t, root, "vm1", holder("n1"), opts)
	rec, err := Read(bg(), root, "vm1")
	if err != nil || rec.Holder != holder("n1") {
		t.Fatalf("after acquire: %+v, %v", rec, err)
	}
	time.Sleep(3 * opts.Renew)
	rec2, err := Read(bg(), root, "vm1")
	if err != nil || rec2.Counter < rec.Counter+2 || rec2.Tentative {
		t.Fatalf("after three renew periods: %+v (was %+v), %v", rec2, rec, err)
	}
	if until := time.Until(l.ValidUntil()); until > opts.hold() {
		t.Errorf("valid for %v more, want at most %v", until, opts.hold())
	}
	// Confirmed and mine: the same incarnation takes it back at once
	// (an agent that closed its handle, QEMU still running).
	l.Close()
	acquireAtOnce(t, root, "vm1", holder("n1"), opts).Close()
}

// KeepOnIsolation is written by the taker and kept by every renewal, so a
// reader sees for the lease's whole life whether the holder may keep it
// while isolated.
func TestKeepOnIsolationLastsTheLease(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	opts.KeepOnIsolation = true
	l := acquireAtOnce(t, root, "vm1", holder("n1"), opts)
	defer l.Close()
	time.Sleep(3 * opts.Renew)
	rec, err := Read(bg(), root, "vm1")
	if err != nil || !rec.KeepOnIsolation || rec.Tentative {
		t.Fatalf("after renewals: %+v, %v", rec, err)
	}
	l2 := acquireAtOnce(t, root, "vm2", holder("n1"), testOpts())
	defer l2.Close()
	if rec, _ := Read(bg(), root, "vm2"); rec.KeepOnIsolation {
		t.Fatalf("a lease taken without the option says %+v", rec)
	}
}

// A lease handed over to a node is taken at once by that node (any of its
// incarnations), while anyone else must see it stand still for the lease
// time, as a held lease.
func TestHandOverOnlyToTheNamedNode(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	l := acquireAtOnce(t, root, "vm1", holder("n1"), opts)
	if err := l.HandOver(bg(), "n2"); err != nil {
		t.Fatal(err)
	}
	rec, err := Read(bg(), root, "vm1")
	if err != nil || rec.HandOver != "n2" || rec.Released {
		t.Fatalf("after the hand-over: %+v, %v", rec, err)
	}
	ctx, cancel := context.WithTimeout(bg(), opts.LeaseTime/2)
	defer cancel()
	if l3, err := Acquire(ctx, root, "vm1", holder("n3"), opts); err == nil {
		l3.Close()
		t.Fatal("n3 took a lease handed over to n2 without waiting the lease time")
	}
	l2 := acquireAtOnce(t, root, "vm1", Holder{Node: "n2", Incarnation: "another-boot"}, opts)
	defer l2.Close()
	if rec, _ := Read(bg(), root, "vm1"); rec.Holder.Node != "n2" || rec.HandOver != "" {
		t.Fatalf("n2's lease: %+v", rec)
	}
}

func TestAcquireRefusesUnmountedDatastore(t *testing.T) {
	root := t.TempDir() // an empty mountpoint: every lease would look absent
	_, err := Acquire(bg(), root, "vm1", holder("n1"), testOpts())
	if !errors.Is(err, ErrNotInitialized) || !strings.Contains(err.Error(), "not mounted or not initialized") {
		t.Fatalf("err %v, want ErrNotInitialized", err)
	}
	if _, err := os.Stat(leasePath(root, "vm1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a lease file was written into an unmounted mountpoint")
	}
}

// Rule: a lease whose counter moves has a live holder. Without it, the
// second acquirer would take vm1 from a running holder after LeaseTime.
func TestAcquireFailsWhileHolderRenews(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	mustAcquire(t, root, "vm1", holder("n1"), opts)
	start := time.Now()
	_, err := Acquire(bg(), root, "vm1", holder("n2"), opts)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("err %v, want *HeldError", err)
	}
	if held.Holder != holder("n1") || held.Age < 0 || held.Age > opts.LeaseTime {
		t.Errorf("held error %+v", held)
	}
	if !strings.HasPrefix(err.Error(), "disk lease of vm1 is held by n1 (renewed ") {
		t.Errorf("message %q", err)
	}
	if d := time.Since(start); d > 2*opts.LeaseTime {
		t.Errorf("gave up after %v: it should fail at the first renewal seen", d)
	}
}

// Rule: a still lease is taken only after LeaseTime on the acquirer's own
// clock, whatever the writer's clock said. The dead holder's record claims
// to be written a year in the future.
func TestAcquireExpiredLeaseWaitsLeaseTime(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	writeLease(t, root, Record{Resource: "vm1", Holder: holder("dead"), Counter: 7, Written: time.Now().AddDate(1, 0, 0)})
	start := time.Now()
	l := mustAcquire(t, root, "vm1", holder("n2"), opts)
	if d := time.Since(start); d < opts.LeaseTime {
		t.Fatalf("took a held lease after %v, before the lease time %v", d, opts.LeaseTime)
	}
	if r := l.Record(); r.Counter < 8 || r.Holder != holder("n2") {
		t.Errorf("record %+v, want counter 8 or more by n2", r)
	}
	// A deadline shorter than the lease time fails without taking it.
	writeLease(t, root, Record{Resource: "vm2", Holder: holder("dead"), Counter: 1})
	ctx, cancel := context.WithTimeout(bg(), opts.LeaseTime/2)
	defer cancel()
	if _, err := Acquire(ctx, root, "vm2", holder("n2"), opts); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("short deadline: err %v", err)
	}
	if r, _ := Read(bg(), root, "vm2"); r.Holder != holder("dead") {
		t.Errorf("short deadline wrote %+v", r)
	}
}

// Rule: a damaged lease file is never free. Garbage blocks acquisition
// until it has stood still for the lease time; garbage that changes is a
// live writer.
func TestCorruptLeaseIsNotFree(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	path := leasePath(root, "vm1")
	if err := os.WriteFile(path, []byte("vigil lease 1 deadbeef 40\n{\"resource\":\"vm1\",\"hold"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bg(), root, "vm1"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read of a torn file: %v", err)
	}
	ctx, cancel := context.WithTimeout(bg(), opts.LeaseTime/2)
	_, err := Acquire(ctx, root, "vm1", holder("n2"), opts)
	cancel()
	if err == nil {
		t.Fatal("took a lease whose file is garbage without waiting")
	}
	start := time.Now()
	l := mustAcquire(t, root, "vm1", holder("n2"), opts)
	if d := time.Since(start); d < opts.LeaseTime {
		t.Fatalf("took a corrupt lease after %v", d)
	}
	if r := l.Record(); r.Holder != holder("n2") {
		t.Errorf("record %+v", r)
	}
	l.Close()

	// Changing garbage: someone is writing.
	os.WriteFile(leasePath(root, "vm3"), []byte("garbage"), 0o644)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			os.WriteFile(leasePath(root, "vm3"), []byte(strings.Repeat("x", i%50+1)), 0o644)
			select {
			case <-stop:
				return
			case <-time.After(opts.Renew):
			}
		}
	}()
	defer func() { close(stop); <-done }()
	_, err = Acquire(bg(), root, "vm3", holder("n2"), opts)
	var held *HeldError
	if !errors.As(err, &held) || held.Holder.Node != "" || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("changing garbage: err %v", err)
	}
}

// Rule: a renewal that finds someone else's record reports the loss at
// once and never overwrites it.
func TestLeaseLostWhenTakenOver(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	l := mustAcquire(t, root, "vm1", holder("n1"), opts)
	time.Sleep(opts.Renew)
	// This thief does not wait for the lease to expire, so its write can
	// fall between a renewal's read and write and be overwritten (a real
	// acquirer never writes while renewals happen); then it tries again.
	thief := Record{Resource: "vm1", Holder: holder("n2"), Counter: 1000}
	for try := 0; ; try++ {
		writeLease(t, root, thief)
		stolen := time.Now()
		select {
		case err := <-l.Lost():
			if d := time.Since(stolen); d > opts.LeaseTime {
				t.Errorf("loss reported %v after the takeover", d)
			}
			if !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "taken over by n2") {
				t.Errorf("loss error %v", err)
			}
		case <-time.After(2 * opts.Renew):
			if r, _ := Read(bg(), root, "vm1"); r.Holder == holder("n1") && try < 5 {
				continue
			}
			t.Fatal("takeover not reported")
		}
		break
	}
	if _, ok := <-l.Lost(); ok {
		t.Error("Lost delivered twice")
	}
	if !errors.Is(l.Err(), ErrLost) {
		t.Errorf("Err() = %v", l.Err())
	}
	time.Sleep(2 * opts.Renew)
	if r, _ := Read(bg(), root, "vm1"); r != thief {
		t.Errorf("the old holder wrote over the new one: %+v", r)
	}
	if err := l.Release(bg()); !errors.Is(err, ErrLost) {
		t.Errorf("Release of a lost lease: %v", err)
	}
	if r, _ := Read(bg(), root, "vm1"); r != thief {
		t.Errorf("Release of a lost lease wrote %+v", r)
	}
}

// An absent file is free to any acquirer, so a holder whose file vanished
// must stop at once.
func TestLeaseLostWhenFileRemoved(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	l := mustAcquire(t, root, "vm1", holder("n1"), opts)
	if err := os.Remove(leasePath(root, "vm1")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-l.Lost():
		if !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "removed") {
			t.Errorf("loss error %v", err)
		}
	case <-time.After(opts.LeaseTime):
		t.Fatal("removal not reported")
	}
}

// The never-twice rule for a holder that cannot write: its renewals fail,
// another node (which can still read the unchanged file) waits the lease
// out and takes it. The holder must have reported the loss, by LeaseTime
// minus Margin, before the other's Acquire returns. Without the self-fence
// on failed renewals both would hold vm1.
func TestHolderSelfFencesBeforeTakeover(t *testing.T) {
	for _, mode := range []string{"errors", "hang"} {
		t.Run(mode, func(t *testing.T) {
			root := newDatastore(t)
			opts := testOpts()
			ffs := newFaultFS(".vigil/leases/vm1")
			hopts := opts
			hopts.FS = ffs
			l := mustAcquire(t, root, "vm1", holder("n1"), hopts)
			time.Sleep(opts.Renew + opts.Renew/2)
			last := time.Now()
			switch mode {
			case "errors":
				ffs.fail(errInjected, errInjected)
			case "hang":
				ffs.block(t)
			}
			lost := make(chan time.Time, 1)
			go func() {
				<-l.Lost()
				lost <- time.Now()
			}()
			// A renewal write already past the fault injection may still
			// land: n2 then sees a live holder and tries again.
			var l2 *Lease
			for try := 0; l2 == nil; try++ {
				var err error
				l2, err = Acquire(bg(), root, "vm1", holder("n2"), opts)
				if err != nil && (!IsHeld(err) && !errors.Is(err, ErrSlow) || try == 3) {
					t.Fatal(err)
				}
			}
			took := time.Now()
			var lostAt time.Time
			select {
			case lostAt = <-lost:
			default:
				t.Fatalf("n2 took vm1 while n1 had not reported the loss")
			}
			if !lostAt.Before(took) {
				t.Fatalf("n1 lost at %v, n2 took at %v", lostAt, took)
			}
			// n1's last successful renewal began before the fault: its
			// validity, as computed, ends at most H later; n2 took it only
			// after that (the protocol), and n1 said so in time (above).
			if until := l.ValidUntil(); until.Sub(last) > opts.hold() || !until.Before(took) {
				t.Errorf("n1 valid until fault+%v, n2 took at fault+%v", until.Sub(last), took.Sub(last))
			}
			if err := l.Err(); !errors.Is(err, ErrLost) {
				t.Errorf("loss error %v", err)
			}
			start := time.Now()
			l.Close() // must not wait for the hung IO
			if d := time.Since(start); d > 50*ms {
				t.Errorf("Close took %v", d)
			}
			l2.Close()
		})
	}
}

// Rule: a renewal completing after the lease lapsed does not revive it.
// The holder's writes are delayed past its validity: it must report the
// loss at the end of validity, not carry on when the slow write returns.
func TestSlowRenewalsLapse(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	ffs := newFaultFS(".vigil/leases/vm1")
	hopts := opts
	hopts.FS = ffs
	l := mustAcquire(t, root, "vm1", holder("n1"), hopts)
	ffs.setDelay(opts.LeaseTime)
	select {
	case err := <-l.Lost():
		if !errors.Is(err, ErrLost) || !errors.Is(err, ErrTimeout) {
			t.Errorf("loss error %v", err)
		}
	case <-time.After(opts.LeaseTime):
		t.Fatal("no loss while every renewal took longer than the lease")
	}
	time.Sleep(opts.LeaseTime) // let the abandoned slow writes finish
}

func TestReleaseLetsTheNextTakeAtOnce(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	l := mustAcquire(t, root, "vm1", holder("n1"), opts)
	time.Sleep(opts.Renew)
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
	if err, ok := <-l.Lost(); ok || err != nil {
		t.Errorf("Lost after Release: %v, %v", err, ok)
	}
	rec, err := Read(bg(), root, "vm1")
	if err != nil || !rec.Released || rec.Holder != holder("n1") {
		t.Fatalf("after release: %+v, %v", rec, err)
	}
	time.Sleep(2 * opts.Renew)
	if r, _ := Read(bg(), root, "vm1"); r != rec {
		t.Errorf("renewed after release: %+v", r)
	}
	acquireAtOnce(t, root, "vm1", holder("n2"), opts)
}

// Release lets a renewal in flight finish before it reads: cut short, the
// renewal's write would land under Release's read, and Release would
// mistake its own renewal for someone else's record (and, without the
// write queue, could even be overwritten by it).
func TestReleaseWaitsForRenewalInFlight(t *testing.T) {
	root := newDatastore(t)
	opts := Options{LeaseTime: time.Second, Renew: 100 * ms, Margin: 200 * ms, Poll: 10 * ms, Settle: 100 * ms}
	ffs := newFaultFS(".vigil/leases/vm1")
	hopts := opts
	hopts.FS = ffs
	l := mustAcquire(t, root, "vm1", holder("n1"), hopts)
	ffs.setDelays(150*ms, 100*ms)
	started := ffs.notify()
	for what := range started {
		if what == "write" {
			break
		}
	}
	if err := l.Release(bg()); err != nil {
		t.Fatalf("Release with a renewal in flight: %v", err)
	}
	writes.idle()
	if r, _ := Read(bg(), root, "vm1"); !r.Released {
		t.Fatalf("file after Release: %+v", r)
	}
}

// Close does not release: the next acquirer must wait the lease out, since
// the disk may still be in use.
func TestCloseDoesNotRelease(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	l := mustAcquire(t, root, "vm1", holder("n1"), opts)
	time.Sleep(opts.Renew)
	l.Close()
	if err, ok := <-l.Lost(); ok || err != nil {
		t.Errorf("Lost after Close: %v, %v", err, ok)
	}
	// Close cuts a renewal short; its write may still land, which would
	// (rightly) make n2 see a live holder.
	writes.idle()
	if r, _ := Read(bg(), root, "vm1"); r.Released {
		t.Fatalf("Close released: %+v", r)
	}
	start := time.Now()
	mustAcquire(t, root, "vm1", holder("n2"), opts)
	if d := time.Since(start); d < opts.LeaseTime {
		t.Errorf("took a closed (unreleased) lease after %v", d)
	}
}

// A write slower than Settle/2 may land after a rival's settle check: the
// acquisition must fail, and the record it leaves is not "mine" to retry.
func TestSlowTakeFails(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	ffs := newFaultFS(".vigil/leases/vm1")
	ffs.setDelay(opts.Settle)
	sopts := opts
	sopts.FS = ffs
	_, err := Acquire(bg(), root, "vm1", holder("n1"), sopts)
	if !errors.Is(err, ErrSlow) {
		t.Fatalf("err %v, want ErrSlow", err)
	}
	writes.idle() // the slow write lands
	rec, err := Read(bg(), root, "vm1")
	if err != nil || !rec.Tentative || rec.Holder != holder("n1") {
		t.Fatalf("left %+v, %v", rec, err)
	}
	start := time.Now()
	mustAcquire(t, root, "vm1", holder("n1"), opts)
	if d := time.Since(start); d < opts.LeaseTime {
		t.Errorf("retook its own tentative record after %v", d)
	}
}

// Why a taker's write must complete soon after the read that allowed it:
// a slow writer A and a fast one B both find vm1 free. B writes, checks
// and wins; A's write lands after B's check. Were A allowed to wait Settle
// and check then, it would find its own record and win too, while B,
// renewing every Renew, may not notice before the lease math says it
// could: their validities would overlap. With the bound A fails (ErrSlow)
// and B loses the lease at its next renewal: never two.
func TestSlowWriterCannotWinARace(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	// Both read the lease free before either write lands: B's write takes
	// 30 ms, A's lands after B's settle check.
	slowA, slowB := newFaultFS("vm"), newFaultFS("vm")
	slowA.setDelay(opts.Settle + opts.Settle/2)
	slowB.setDelay(30 * ms)
	type result struct {
		l   *Lease
		err error
		at  time.Time
	}
	for try := 0; ; try++ {
		resource := fmt.Sprintf("vm%d", try)
		var wg sync.WaitGroup
		res := make([]result, 2)
		for i, fsys := range []FS{slowA, slowB} {
			o := opts
			o.FS = fsys
			wg.Go(func() {
				l, err := Acquire(bg(), root, resource, holder([]string{"a", "b"}[i]), o)
				res[i] = result{l, err, time.Now()}
			})
		}
		wg.Wait()
		a, b := res[0], res[1]
		for _, r := range res {
			if r.l != nil {
				r.l.Close()
			}
		}
		if a.l != nil && b.l != nil {
			first, second := a, b
			if b.at.Before(a.at) {
				first, second = b, a
			}
			if first.l.ValidUntil().After(second.at) {
				t.Fatalf("both won, validities overlapping by %v", first.l.ValidUntil().Sub(second.at))
			}
		}
		if a.l != nil {
			t.Fatalf("the slow writer won")
		}
		if errors.Is(a.err, ErrSlow) {
			return // the scenario happened, and A lost it
		}
		if try == 5 {
			t.Fatalf("A never got to write (last: %v)", a.err)
		}
		t.Logf("A read after B's write (%v); again", a.err)
	}
}

func TestAcquireFenced(t *testing.T) {
	root := newDatastore(t)
	opts := testOpts()
	n1 := holder("n1")
	var l *Lease
	for try := 0; l == nil; try++ {
		writeLease(t, root, Record{Resource: "vm1", Holder: n1, Counter: 3})
		start := time.Now()
		var err error
		l, err = AcquireFenced(bg(), root, "vm1", holder("n2"), n1, opts)
		if errors.Is(err, ErrSlow) && try < 3 {
			writes.idle()
			continue // a loaded machine: set the scene again
		}
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d >= opts.LeaseTime {
			t.Errorf("took %v", d)
		}
	}
	defer l.Close()
	if r := l.Record(); r.Counter < 4 || r.Holder != holder("n2") {
		t.Errorf("record %+v", r)
	}

	// The proof is about one incarnation: n1 rebooted and holds it again.
	reborn := Holder{Node: "n1", Incarnation: "boot-2"}
	writeLease(t, root, Record{Resource: "vm2", Holder: reborn, Counter: 9})
	_, err := AcquireFenced(bg(), root, "vm2", holder("n2"), n1, opts)
	var held *HeldError
	if !errors.As(err, &held) || held.Holder != reborn {
		t.Fatalf("lease of a later incarnation: err %v", err)
	}
	if r, _ := Read(bg(), root, "vm2"); r.Holder != reborn {
		t.Errorf("overwrote %+v", r)
	}

	os.WriteFile(leasePath(root, "vm3"), []byte("junk"), 0o644)
	if _, err := AcquireFenced(bg(), root, "vm3", holder("n2"), n1, opts); !errors.Is(err, ErrCorrupt) {
		t.Errorf("corrupt lease: err %v", err)
	}

	// Free leases are taken as by Acquire.
	l4, err := AcquireFenced(bg(), root, "vm4", holder("n2"), n1, opts)
	if err != nil && !errors.Is(err, ErrSlow) {
		t.Fatal(err)
	}
	if l4 != nil {
		l4.Close()
	}
}

func TestAcquireRefusesBadArguments(t *testing.T) {
	root := newDatastore(t)
	for _, c := range []struct {
		resource string
		me       Holder
		opts     Options
	}{
		{"../etc", holder("n1"), testOpts()},
		{"vm1", Holder{Node: "n1"}, testOpts()},
		{"vm1", holder("n1"), Options{LeaseTime: 300 * ms, Renew: 200 * ms}},
	} {
		if _, err := Acquire(bg(), root, c.resource, c.me, c.opts); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
