package datastore

import (
	"errors"
	"fmt"
	"time"
)

// Holder identifies who holds a disk lease: a node and its incarnation
// (boot id). A restarted node is a different holder: it did not inherit
// the leases of its previous life, and must acquire them like anyone else.
type Holder struct {
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
}

// String is the holder's node name, for messages ("held by n1"); the
// incarnation is left out because operators know nodes, not boot ids.
func (h Holder) String() string {
	if h.Node == "" {
		return "nobody"
	}
	return h.Node
}

func (h Holder) check() error {
	if err := checkName("node", h.Node); err != nil {
		return err
	}
	if h.Incarnation == "" {
		return fmt.Errorf("%w: holder %s without an incarnation", ErrName, h.Node)
	}
	return nil
}

const (
	leaseKind    = "lease"
	leaseVersion = 1
)

// Record is the content of a lease file.
type Record struct {
	Resource string `json:"resource"`
	Holder   Holder `json:"holder"`
	// Counter increases with every write, whoever writes: a taker writes
	// the previous counter plus one. A reader watching for a change can
	// therefore never see the same content twice by accident.
	Counter uint64 `json:"counter"`
	// Released: the holder has stopped using the disk and let go; the next
	// acquirer need not wait.
	Released bool `json:"released,omitempty"`
	// Tentative: written by an acquirer that has not yet confirmed it won
	// (its settle check). The holder's first renewal clears it. A
	// tentative record is never "mine" to a later Acquire: an acquisition
	// that failed after writing (its write too slow, landing late over a
	// winner's record) leaves one, and the winner may still be running.
	Tentative bool `json:"tentative,omitempty"`
	// HandOver names the node the holder handed the disk to (the target of
	// a live migration, whose QEMU runs the guest from now on). That node
	// takes the lease at once, like a released one; anyone else must see
	// it stand still for the lease time, as a held one.
	HandOver string `json:"hand_over,omitempty"`
	// KeepOnIsolation: the holder may keep using the disk when it is cut
	// off from its cluster (a VM's isolation response leave-running), for
	// as long as it renews this lease. A holder proven down only by its
	// watchdog's timing is then not proven off: the watchdog does not
	// reset a node that still has good reason to pet it. Set for the
	// lease's whole life by the acquirer (Options.KeepOnIsolation), so
	// the holder and every later reader agree on it.
	KeepOnIsolation bool `json:"keep_on_isolation,omitempty"`
	// Written is the writer's wall clock, for display only.
	Written time.Time `json:"written"`
}

func encodeLease(r Record) ([]byte, error) {
	if err := checkName("resource", r.Resource); err != nil {
		return nil, err
	}
	if err := r.Holder.check(); err != nil {
		return nil, err
	}
	return encodeFrame(leaseKind, leaseVersion, r)
}

func decodeLease(data []byte, resource string) (Record, error) {
	var r Record
	if _, err := decodeFrame(data, leaseKind, leaseVersion, &r); err != nil {
		return Record{}, err
	}
	if r.Resource != resource {
		return Record{}, fmt.Errorf("%w: lease file of %s holds a lease of %q", ErrCorrupt, resource, r.Resource)
	}
	if err := r.Holder.check(); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return r, nil
}

// Lease timing defaults. DefaultLeaseTime is the wait a takeover costs when
// the holder neither released nor was fenced; the node lease and fencing
// make that case rare.
const (
	DefaultLeaseTime = 5 * time.Second
)

// Options are the disk lease timings. Every node of a cluster must use the
// same LeaseTime, Renew and Margin (they are one agreement); Poll and
// Settle are the acquirer's own. Zero values take defaults derived from
// LeaseTime.
type Options struct {
	// LeaseTime: how long an acquirer watches a held lease stand still,
	// on its own clock, before it may take it. Default DefaultLeaseTime.
	LeaseTime time.Duration
	// Renew: the holder's renewal period; less than LeaseTime/3. Default
	// LeaseTime/5.
	Renew time.Duration
	// Margin: the holder gives up (reports loss) once it has not renewed
	// for LeaseTime-Margin, measured from the start of its last successful
	// renewal. It must cover the clock rate difference over LeaseTime and
	// the time the caller needs to kill QEMU after a loss (see the package
	// documentation). At least 2*Renew must remain: LeaseTime-Margin >=
	// 2*Renew. Default LeaseTime/4.
	Margin time.Duration
	// Poll: how often an acquirer re-reads a held lease. Default
	// LeaseTime/20 (at least 10 ms).
	Poll time.Duration
	// Settle: after writing its record an acquirer waits this long, then
	// reads again, to see whether a concurrent acquirer overwrote it. Its
	// own write must also complete within 3/4 of Settle of the read that
	// allowed it, or the acquisition fails with ErrSlow: on a datastore
	// whose writes are slower, raise it. At most LeaseTime/4. Default
	// LeaseTime/20 (at least 10 ms).
	Settle time.Duration
	// KeepOnIsolation is written into the records of the lease taken
	// (Record.KeepOnIsolation).
	KeepOnIsolation bool
	// FS defaults to OSFS.
	FS FS
}

// withDefaults fills zero fields and checks the relations the safety
// argument needs.
func (o Options) withDefaults() (Options, error) {
	if o.LeaseTime < 0 || o.Renew < 0 || o.Margin < 0 || o.Poll < 0 || o.Settle < 0 {
		return o, errors.New("datastore: negative lease option")
	}
	if o.LeaseTime == 0 {
		o.LeaseTime = DefaultLeaseTime
	}
	if o.Renew == 0 {
		o.Renew = o.LeaseTime / 5
	}
	if o.Margin == 0 {
		o.Margin = o.LeaseTime / 4
	}
	if o.Poll == 0 {
		o.Poll = max(o.LeaseTime/20, 10*time.Millisecond)
	}
	if o.Settle == 0 {
		o.Settle = max(o.LeaseTime/20, 10*time.Millisecond)
	}
	if o.FS == nil {
		o.FS = OSFS{}
	}
	switch {
	case 3*o.Renew >= o.LeaseTime:
		return o, fmt.Errorf("datastore: lease renew period %v must be less than a third of the lease time %v", o.Renew, o.LeaseTime)
	case o.LeaseTime-o.Margin < 2*o.Renew:
		return o, fmt.Errorf("datastore: lease time %v minus margin %v leaves less than two renew periods of %v", o.LeaseTime, o.Margin, o.Renew)
	case o.Settle > o.LeaseTime/4:
		return o, fmt.Errorf("datastore: lease settle time %v exceeds a quarter of the lease time %v", o.Settle, o.LeaseTime)
	}
	return o, nil
}

// writeBound is how soon after the read that allowed it a taker's write
// must complete: 3/4 of Settle, so that one acquirer's write bound (on its
// clock) stays shorter than another's settle wait (on its own) for clock
// rate errors up to 1/7, beyond lease.MaxDrift.
func (o Options) writeBound() time.Duration { return o.Settle * 3 / 4 }

// hold is how long a successful renewal keeps the lease, from the start of
// the renewal, on the holder's clock.
func (o Options) hold() time.Duration { return o.LeaseTime - o.Margin }

// Errors of the disk lease.
var (
	// ErrLost is wrapped by the error a Lease reports on Lost: the lease
	// was taken over, its file removed or damaged under it, or it could not
	// be renewed in time. The VM must be killed at once.
	ErrLost = errors.New("datastore: disk lease lost")
	// ErrSlow means the datastore was too slow for a safe acquisition: the
	// acquirer's write did not land soon enough after the read that allowed
	// it, or the settle check came too late. Retry later.
	ErrSlow = errors.New("datastore: too slow to acquire the disk lease safely")
)

// HeldError is the error of an acquisition refused because someone else
// holds the lease.
type HeldError struct {
	Resource string
	// Holder is who the lease file names; zero if the file is unreadable.
	Holder Holder
	// Age bounds how long ago the acquirer saw the lease file change, on
	// the acquirer's own clock; negative when it did not watch.
	Age time.Duration
	// Race: a concurrent acquirer's write replaced ours.
	Race bool
}

func (e *HeldError) Error() string {
	who := "held by " + e.Holder.String()
	if e.Holder.Node == "" {
		who = "held by an unreadable record"
	}
	switch {
	case e.Race:
		return fmt.Sprintf("disk lease of %s is %s (it won a concurrent acquire)", e.Resource, who)
	case e.Age < 0:
		return fmt.Sprintf("disk lease of %s is %s", e.Resource, who)
	case e.Holder.Node == "":
		return fmt.Sprintf("disk lease of %s is %s (changed %.1f s ago)", e.Resource, who, e.Age.Seconds())
	}
	return fmt.Sprintf("disk lease of %s is %s (renewed %.1f s ago)", e.Resource, who, e.Age.Seconds())
}

// IsHeld reports whether err is (or wraps) a *HeldError.
func IsHeld(err error) bool {
	var h *HeldError
	return errors.As(err, &h)
}

// obsKind is what one read of a lease file found.
type obsKind uint8

const (
	obsAbsent  obsKind = iota // no file
	obsRecord                 // a valid record
	obsCorrupt                // a file that does not decode
)

// observation is one read of a lease file by an acquirer, stamped on the
// acquirer's own clock (a monotonic offset): start before the read was
// issued, end after it returned. The read took effect somewhere in
// [start, end].
type observation struct {
	start, end time.Duration
	kind       obsKind
	rec        Record // when kind == obsRecord
	raw        string // the exact bytes: stillness is judged on them
}

type verdict uint8

const (
	verdictWait verdict = iota // keep watching
	verdictTake                // write our record
	verdictHeld                // someone alive holds it: give up
)

// decision is decide's answer.
type decision struct {
	verdict verdict
	why     string        // for take: absent, released, mine, expired
	next    uint64        // for take: the counter to write
	wait    time.Duration // for wait: stillness still needed
	held    *HeldError    // for held
}

// decide is the acquirer's rule, a pure function of its reads of the lease
// file so far (in order, on its own clock). The last read decides when it
// shows the lease free: absent, released, or naming me (this node and
// incarnation) in a confirmed record. Otherwise the lease is taken only if every read returned
// the same bytes and they stood still for leaseTime: from the end of the
// first read to the start of the last, the only interval in which no write
// can have landed unseen. Any change means a live writer: held. A corrupt
// file is treated like a record of an unknown holder: it is never free.
func decide(resource string, me Holder, leaseTime time.Duration, obs []observation) decision {
	if len(obs) == 0 {
		return decision{verdict: verdictWait, wait: leaseTime}
	}
	last := obs[len(obs)-1]
	next := uint64(1)
	if last.kind == obsRecord {
		next = last.rec.Counter + 1
	}
	switch {
	case last.kind == obsAbsent:
		return decision{verdict: verdictTake, why: "absent", next: next}
	case last.kind == obsRecord && last.rec.Released:
		return decision{verdict: verdictTake, why: "released", next: next}
	case last.kind == obsRecord && last.rec.Holder == me && !last.rec.Tentative:
		return decision{verdict: verdictTake, why: "mine", next: next}
	case last.kind == obsRecord && last.rec.HandOver != "" && last.rec.HandOver == me.Node && !last.rec.Tentative:
		return decision{verdict: verdictTake, why: "handed over", next: next}
	}
	for i := len(obs) - 1; i > 0; i-- {
		if obs[i].kind != obs[i-1].kind || obs[i].raw != obs[i-1].raw {
			// The change landed after obs[i-1] began.
			return decision{verdict: verdictHeld, held: &HeldError{
				Resource: resource, Holder: last.rec.Holder, Age: max(last.end-obs[i-1].start, 0),
			}}
		}
	}
	still := last.start - obs[0].end
	if still >= leaseTime {
		return decision{verdict: verdictTake, why: "expired", next: next}
	}
	return decision{verdict: verdictWait, wait: leaseTime - max(still, 0)}
}

// extend is the holder's rule for one renewal that began at start and
// completed at end (its clock), with the lease valid until valid: the
// renewal counts only if it completed while the lease was still valid, and
// then the lease is valid until start+hold. A renewal that completes late
// never revives a lease that lapsed: by then an acquirer may have seen the
// file still for its lease time and taken it.
func extend(valid, start, end, hold time.Duration) (time.Duration, bool) {
	if start >= valid || end >= valid {
		return valid, false
	}
	return max(valid, start+hold), true
}
