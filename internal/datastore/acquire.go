package datastore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"
)

// writeKey names the queue of one holder's writes to one lease file.
func writeKey(path string, h Holder) string {
	return path + "\x00" + h.Node + "\x00" + h.Incarnation
}

// Read returns the lease record of resource, for display ("who holds
// vm1"). An absent lease is an error satisfying errors.Is(err,
// fs.ErrNotExist); a damaged one wraps ErrCorrupt.
func Read(ctx context.Context, root, resource string) (Record, error) {
	return readLease(ctx, OSFS{}, root, resource)
}

func readLease(ctx context.Context, fsys FS, root, resource string) (Record, error) {
	if err := checkName("resource", resource); err != nil {
		return Record{}, err
	}
	data, err := do(ctx, func() ([]byte, error) { return fsys.ReadFile(leasePath(root, resource)) })
	if err != nil {
		return Record{}, fmt.Errorf("read disk lease of %s: %w", resource, err)
	}
	r, err := decodeLease(data, resource)
	if err != nil {
		return Record{}, fmt.Errorf("read disk lease of %s: %w", resource, err)
	}
	return r, nil
}

// clock is a monotonic clock local to one acquisition or lease: offsets
// from a fixed origin, read through time.Since, which uses the monotonic
// reading and so ignores wall clock steps.
type clock struct{ origin time.Time }

func newClock() clock                        { return clock{time.Now()} }
func (c clock) now() time.Duration           { return time.Since(c.origin) }
func (c clock) at(d time.Duration) time.Time { return c.origin.Add(d) }

// observe reads the lease file once and stamps the read.
func observe(ctx context.Context, fsys FS, path, resource string, c clock) (observation, error) {
	o := observation{start: c.now()}
	data, err := do(ctx, func() ([]byte, error) { return fsys.ReadFile(path) })
	o.end = c.now()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		o.kind = obsAbsent
		return o, nil
	case err != nil:
		return o, err
	}
	o.raw = string(data)
	if o.rec, err = decodeLease(data, resource); err != nil {
		if errors.Is(err, ErrVersion) {
			// A newer release holds it; we cannot judge it: refuse.
			return o, err
		}
		o.kind = obsCorrupt
		o.rec = Record{}
		return o, nil
	}
	o.kind = obsRecord
	return o, nil
}

func (o Options) checkArgs(resource string, me Holder) (Options, error) {
	if err := checkName("resource", resource); err != nil {
		return o, err
	}
	if err := me.check(); err != nil {
		return o, err
	}
	return o.withDefaults()
}

// Acquire takes the disk lease of resource for me, waiting if need be: at
// once if the lease file is absent, released or already names me (this
// node and incarnation); otherwise only after watching it stand still for
// opts.LeaseTime on this node's own clock, re-reading every opts.Poll. If
// it moves, its holder is alive and Acquire fails with a *HeldError. A
// damaged file is treated as held by an unknown holder, never as free.
// After writing its record Acquire waits opts.Settle and reads again: if a
// concurrent acquirer's record is there instead, it fails with a
// *HeldError (Race set). The returned Lease renews itself until Release or
// Close. Use one Lease per resource per incarnation: Acquire treats a
// confirmed lease naming me as mine, so two concurrent Acquires of one
// resource with the same Holder could both succeed.
//
// The root must carry a datastore marker (Init): on an unmounted
// mountpoint every lease would look absent, that is free.
func Acquire(ctx context.Context, root, resource string, me Holder, opts Options) (*Lease, error) {
	opts, err := opts.checkArgs(resource, me)
	if err != nil {
		return nil, err
	}
	l, err := acquire(ctx, root, resource, me, opts)
	if err != nil && !IsHeld(err) {
		return nil, fmt.Errorf("acquire disk lease of %s: %w", resource, err)
	}
	return l, err
}

func acquire(ctx context.Context, root, resource string, me Holder, opts Options) (*Lease, error) {
	if err := requireMarker(ctx, opts.FS, root); err != nil {
		return nil, err
	}
	c := newClock()
	path := leasePath(root, resource)
	var obs []observation
	for {
		// A read slower than the lease time tells nothing useful: give up
		// rather than wait on a hung mount without a caller deadline.
		rctx, cancel := context.WithTimeout(ctx, opts.LeaseTime)
		o, err := observe(rctx, opts.FS, path, resource, c)
		cancel()
		if err != nil {
			return nil, err
		}
		// Keep the first read and the latest: decide needs no more while
		// nothing changes, and fails at the first change.
		if n := len(obs); n >= 2 && obs[n-1].kind == o.kind && obs[n-1].raw == o.raw {
			obs[n-1] = o
		} else {
			obs = append(obs, o)
		}
		d := decide(resource, me, opts.LeaseTime, obs)
		switch d.verdict {
		case verdictHeld:
			return nil, d.held
		case verdictTake:
			return take(ctx, root, resource, me, opts, c, o, d.next)
		}
		if err := sleep(ctx, min(opts.Poll, d.wait)); err != nil {
			return nil, fmt.Errorf("watched a held lease for %.1f s of %.1f s: %w",
				(opts.LeaseTime - d.wait).Seconds(), opts.LeaseTime.Seconds(), err)
		}
	}
}

// AcquireFenced takes the disk lease of resource for me at once, without
// watching it, because the caller (the DC) has proof that fenced, the
// holder the file names (that node and that incarnation), is off: a
// confirmed fence or a confirmed self-fence. It refuses (a *HeldError)
// when the file names anyone else, since the proof says nothing about
// them, and fails on a damaged file. An absent, released or own lease is
// taken as by Acquire.
func AcquireFenced(ctx context.Context, root, resource string, me, fenced Holder, opts Options) (*Lease, error) {
	opts, err := opts.checkArgs(resource, me)
	if err == nil {
		err = fenced.check()
	}
	if err != nil {
		return nil, err
	}
	l, err := acquireFenced(ctx, root, resource, me, fenced, opts)
	if err != nil && !IsHeld(err) {
		return nil, fmt.Errorf("acquire disk lease of %s from fenced %s: %w", resource, fenced, err)
	}
	return l, err
}

func acquireFenced(ctx context.Context, root, resource string, me, fenced Holder, opts Options) (*Lease, error) {
	if err := requireMarker(ctx, opts.FS, root); err != nil {
		return nil, err
	}
	c := newClock()
	rctx, cancel := context.WithTimeout(ctx, opts.LeaseTime)
	o, err := observe(rctx, opts.FS, leasePath(root, resource), resource, c)
	cancel()
	if err != nil {
		return nil, err
	}
	d := decide(resource, me, opts.LeaseTime, []observation{o})
	switch {
	case d.verdict == verdictTake:
	case o.kind == obsCorrupt:
		return nil, fmt.Errorf("%w: cannot tell whether it names %s", ErrCorrupt, fenced)
	case o.rec.Holder == fenced:
		d.next = o.rec.Counter + 1
	default:
		return nil, &HeldError{Resource: resource, Holder: o.rec.Holder, Age: -1}
	}
	return take(ctx, root, resource, me, opts, c, o, d.next)
}

// take writes my record over what o saw, then checks that it stuck. The
// write must complete within writeBound of o's start and the check read
// begins Settle after the write completed: so a concurrent taker, whose
// own write landed after o (it read the same state) and within writeBound
// of its read, has landed before our check reads, and at most one of us
// finds its own record there. The lease is valid from o.start, which is
// before our write began.
func take(ctx context.Context, root, resource string, me Holder, opts Options, c clock, o observation, counter uint64) (*Lease, error) {
	rec := Record{Resource: resource, Holder: me, Counter: counter, Tentative: true, KeepOnIsolation: opts.KeepOnIsolation, Written: time.Now()}
	data, err := encodeLease(rec)
	if err != nil {
		return nil, err
	}
	path := leasePath(root, resource)
	wctx, cancel := context.WithDeadline(ctx, c.at(o.start+opts.writeBound()))
	err = writes.write(wctx, opts.FS, writeKey(path, me), path, data)
	cancel()
	if err == nil && c.now() > o.start+opts.writeBound() {
		err = ErrTimeout
	}
	if errors.Is(err, ErrTimeout) && ctx.Err() == nil {
		// Our record may be there, unrenewed; acquirers will wait it out.
		return nil, fmt.Errorf("%w: write took more than %v", ErrSlow, opts.writeBound())
	}
	if err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	if err := sleep(ctx, opts.Settle); err != nil {
		return nil, err
	}
	valid := o.start + opts.hold()
	rctx, cancel := context.WithDeadline(ctx, c.at(valid))
	defer cancel()
	check, err := observe(rctx, opts.FS, path, resource, c)
	if errors.Is(err, ErrTimeout) && ctx.Err() == nil {
		return nil, fmt.Errorf("%w: settle check: %w", ErrSlow, err)
	}
	if err != nil {
		return nil, fmt.Errorf("settle check: %w", err)
	}
	if check.kind == obsAbsent {
		return nil, errors.New("the lease file vanished during the settle check")
	}
	if check.kind != obsRecord || check.rec.Holder != me || check.rec.Counter != counter || check.rec.Released {
		return nil, &HeldError{Resource: resource, Holder: check.rec.Holder, Age: -1, Race: true}
	}
	if check.end >= valid {
		return nil, fmt.Errorf("%w: the settle check ended after the lease would lapse", ErrSlow)
	}
	return startLease(root, resource, me, opts, c, rec, valid), nil
}

// Lease is a held disk lease. Its goroutine renews it every Renew until
// Release or Close, and reports on Lost if it is lost. Methods are safe
// for concurrent use.
type Lease struct {
	root, path string
	me         Holder
	opts       Options
	c          clock

	lost      chan error
	stopOnce  sync.Once
	stop      chan struct{} // closed to stop renewing
	abortOnce sync.Once
	abort     chan struct{} // closed to also cut an ongoing renewal short
	done      chan struct{} // closed when the renewer has returned
	endOnce   sync.Once

	mu      sync.Mutex
	rec     Record        // the last record written
	valid   time.Duration // on c: the lease holds until then
	lostErr error
}

func startLease(root, resource string, me Holder, opts Options, c clock, rec Record, valid time.Duration) *Lease {
	l := &Lease{
		root: root, path: leasePath(root, resource), me: me, opts: opts, c: c,
		lost:  make(chan error, 1),
		stop:  make(chan struct{}),
		abort: make(chan struct{}),
		done:  make(chan struct{}),
		rec:   rec, valid: valid,
	}
	go l.renewLoop()
	return l
}

// Lost delivers the reason once if the lease is lost (wrapping ErrLost),
// then is closed. The holder must then kill the VM at once: an acquirer
// may take the lease Margin after the loss is reported. After Release or
// Close it is closed without a value (a receive yields nil).
func (l *Lease) Lost() <-chan error { return l.lost }

// Record returns the last record this lease wrote.
func (l *Lease) Record() Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec
}

// ValidUntil is when the lease lapses unless renewed, as a time with a
// monotonic reading (compare it with time.Now, not with wall times read
// elsewhere). An agent that may be frozen while QEMU runs should stop
// petting its watchdog in time for the reset to happen before then.
func (l *Lease) ValidUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c.at(l.valid)
}

// Err returns why the lease was lost, or nil.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

func (l *Lease) renewLoop() {
	defer close(l.done)
	// A context that Close cancels, so that it does not wait for a hung
	// read or write. Release does not: it must know whether the last
	// renewal landed before it reads and writes.
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.abort:
			cancel()
		case <-base.Done():
		}
	}()
	// Renew on the validity's schedule, not the handle's: if the settle
	// check was slow, the first renewal is due at once.
	l.mu.Lock()
	next := l.valid - l.opts.hold() + l.opts.Renew
	l.mu.Unlock()
	var lastErr error
	for {
		l.mu.Lock()
		valid := l.valid
		l.mu.Unlock()
		// Wake for the next renewal, or exactly when the lease lapses: a
		// lapse must be reported on time even after failed renewals.
		t := time.NewTimer(min(next, valid) - l.c.now())
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
		}
		now := l.c.now()
		if now >= valid {
			l.lose(lapsed(l.opts, lastErr))
			return
		}
		if now < next {
			continue
		}
		next = now + l.opts.Renew
		err := l.renew(base, valid)
		if errors.Is(err, ErrLost) {
			l.lose(err)
			return
		}
		if base.Err() != nil {
			return // aborted during the renewal
		}
		lastErr = err
	}
}

func lapsed(opts Options, lastErr error) error {
	if lastErr == nil {
		lastErr = errors.New("no successful renewal")
	}
	return fmt.Errorf("%w: not renewed for %v (lease time %v minus margin %v): %w",
		ErrLost, opts.hold(), opts.LeaseTime, opts.Margin, lastErr)
}

// renew is one read-check-write cycle, bounded by the lease's validity: a
// write that completes after the lease lapsed does not count (extend).
// Someone else's record, or no file at all, is a loss at once: an absent
// file is free to any acquirer. A damaged file is a failed renewal, not
// overwritten (we cannot tell who wrote it), and lapses in time like any
// other failure.
func (l *Lease) renew(base context.Context, valid time.Duration) error {
	start := l.c.now()
	ctx, cancel := context.WithDeadline(base, l.c.at(valid))
	defer cancel()
	l.mu.Lock()
	mine := l.rec
	l.mu.Unlock()
	o, err := observe(ctx, l.opts.FS, l.path, mine.Resource, l.c)
	if err != nil {
		return fmt.Errorf("renew: read: %w", err)
	}
	switch {
	case o.kind == obsAbsent:
		return fmt.Errorf("%w: disk lease file of %s was removed", ErrLost, mine.Resource)
	case o.kind == obsCorrupt:
		return fmt.Errorf("renew: %w", ErrCorrupt)
	case o.rec.Holder != l.me:
		return fmt.Errorf("%w: disk lease of %s taken over by %s", ErrLost, mine.Resource, o.rec.Holder)
	case o.rec.Counter != mine.Counter || o.rec.Released:
		return fmt.Errorf("%w: disk lease of %s rewritten under us (counter %d, ours %d)", ErrLost, mine.Resource, o.rec.Counter, mine.Counter)
	}
	rec := mine
	rec.Counter++
	rec.Tentative = false
	rec.Written = time.Now()
	data, err := encodeLease(rec)
	if err != nil {
		return err
	}
	if err := writes.write(ctx, l.opts.FS, writeKey(l.path, l.me), l.path, data); err != nil {
		return fmt.Errorf("renew: write: %w", err)
	}
	nv, ok := extend(valid, start, l.c.now(), l.opts.hold())
	if !ok {
		return fmt.Errorf("renew: %w: write completed after the lease lapsed", ErrTimeout)
	}
	l.mu.Lock()
	l.rec, l.valid = rec, nv
	l.mu.Unlock()
	return nil
}

func (l *Lease) lose(err error) {
	l.mu.Lock()
	l.lostErr = err
	l.mu.Unlock()
	l.endOnce.Do(func() {
		l.lost <- err
		close(l.lost)
	})
}

// stopRenewing stops the renewer and waits for it. With abort it cuts an
// ongoing renewal short and returns promptly even on a hung datastore;
// the abandoned write may still land (it is ours and unreleased: harmless,
// and the write queue keeps later writes of ours behind it). Without, it
// waits for the renewal, at most until the lease lapses.
func (l *Lease) stopRenewing(abort bool) {
	if abort {
		l.abortOnce.Do(func() { close(l.abort) })
	}
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
}

// Close stops renewing without releasing: the lease file keeps naming
// this holder, and the next acquirer must wait LeaseTime. Use it when the
// disk may still be in use (the agent is exiting with QEMU running) or
// the datastore cannot be trusted with a write.
func (l *Lease) Close() error {
	l.stopRenewing(true)
	l.endOnce.Do(func() { close(l.lost) })
	return nil
}

// Release marks the lease released, so that the next acquirer takes it at
// once, and stops renewing. Call it only once the disk is no longer in use
// (QEMU has exited). It lets an ongoing renewal finish first (on a hung
// datastore, until the lease lapses), then writes only while the lease is
// still valid and still ours; otherwise it fails and leaves the file alone
// (the lease then expires in place, or was already lost).
func (l *Lease) Release(ctx context.Context) error {
	return l.letGo(ctx, "release", func(r *Record) { r.Released = true })
}

// HandOver lets the lease go to node (Record.HandOver): like Release, but
// only that node may take it at once; anyone else must wait for it to
// stand still. A live migration's source uses it, so that the disk never
// lies free while the guest runs on the target before the target took
// the lease.
func (l *Lease) HandOver(ctx context.Context, node string) error {
	if err := checkName("node", node); err != nil {
		return err
	}
	return l.letGo(ctx, "hand over", func(r *Record) { r.HandOver = node })
}

// letGo ends the lease with a last record that mark edits, written only
// while the lease is valid and the file still holds our record.
func (l *Lease) letGo(ctx context.Context, what string, mark func(*Record)) error {
	l.stopRenewing(false)
	if err := l.Err(); err != nil {
		return err
	}
	defer l.endOnce.Do(func() { close(l.lost) })
	l.mu.Lock()
	mine, valid := l.rec, l.valid
	l.mu.Unlock()
	if l.c.now() >= valid {
		return fmt.Errorf("%s disk lease of %s: %w: it lapsed first", what, mine.Resource, ErrLost)
	}
	ctx, cancel := context.WithDeadline(ctx, l.c.at(valid))
	defer cancel()
	o, err := observe(ctx, l.opts.FS, l.path, mine.Resource, l.c)
	if err != nil {
		return fmt.Errorf("%s disk lease of %s: read: %w", what, mine.Resource, err)
	}
	if o.kind != obsRecord || o.rec.Holder != l.me || o.rec.Counter != mine.Counter || o.rec.Released {
		return fmt.Errorf("%s disk lease of %s: %w: the file no longer holds our record", what, mine.Resource, ErrLost)
	}
	rec := mine
	rec.Counter++
	rec.Tentative = false
	mark(&rec)
	rec.Written = time.Now()
	data, err := encodeLease(rec)
	if err != nil {
		return err
	}
	// The queue makes this write wait for a renewal write cut short by
	// stopRenewing: it must not land after our last record.
	if err := writes.write(ctx, l.opts.FS, writeKey(l.path, l.me), l.path, data); err != nil {
		return fmt.Errorf("%s disk lease of %s: write: %w", what, mine.Resource, err)
	}
	l.mu.Lock()
	l.rec = rec
	l.mu.Unlock()
	return nil
}
