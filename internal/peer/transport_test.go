package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/pki"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	keyA = bytes.Repeat([]byte{0xa}, pki.KeySize)
	keyB = bytes.Repeat([]byte{0xb}, pki.KeySize)
)

// resolver is a Resolver the test rewires.
type resolver struct {
	mu    sync.Mutex
	addrs map[uint64][]string
}

func newResolver() *resolver { return &resolver{addrs: make(map[uint64][]string)} }

func (r *resolver) PeerAddrs(n uint64) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.addrs[n])
}

func (r *resolver) set(n uint64, addrs ...string) {
	r.mu.Lock()
	r.addrs[n] = addrs
	r.mu.Unlock()
}

// delivery is a message as a node's Handler received it, with the link.
type delivery struct {
	link int
	m    *raftpb.Message
}

// testNode is a Transport with one HTTPS server per link.
type testNode struct {
	id   uint64
	tr   *Transport
	ca   *pki.CA
	cert tls.Certificate
	srvs []*httptest.Server
	got  chan delivery
	// refuse, if set before the node is used, makes deliver fail.
	refuse func(*raftpb.Message) error
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustCA(t *testing.T, key []byte) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(key)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newNode starts node id of the cluster with key, listening on links
// loopback servers, resolving peers with res.
func newNode(t *testing.T, key []byte, id uint64, res Resolver, links int, mod func(*Config)) *testNode {
	t.Helper()
	ca := mustCA(t, key)
	cert, err := ca.IssueNode("n"+strconv.FormatUint(id, 10), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Self:        id,
		SelfName:    "n" + strconv.FormatUint(id, 10),
		TLS:         pki.ClientTLS(ca, &cert, ""),
		Resolver:    res,
		Logger:      testLogger(t).With("node", id),
		DialTimeout: time.Second, // generous: tests run under -race on busy machines
	}
	if mod != nil {
		mod(&cfg)
	}
	n := &testNode{id: id, tr: New(cfg), ca: ca, cert: cert, got: make(chan delivery, 10000)}
	for i := range links {
		n.srvs = append(n.srvs, n.serve(t, i, nil))
	}
	t.Cleanup(n.tr.Close) // runs before the servers' cleanups
	return n
}

// serve starts the HTTPS server of link i, on ln if given.
func (n *testNode) serve(t *testing.T, link int, ln net.Listener) *httptest.Server {
	t.Helper()
	h := n.tr.Handler(func(ctx context.Context, m *raftpb.Message) error {
		if n.refuse != nil {
			if err := n.refuse(m); err != nil {
				return err
			}
		}
		select {
		case n.got <- delivery{link, m}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	mux := http.NewServeMux()
	mux.Handle(StreamPath, noPanic(t, h))
	srv := httptest.NewUnstartedServer(mux)
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.EnableHTTP2 = true
	srv.TLS = pki.ServerTLS(n.ca, n.cert)
	srv.Config.ErrorLog = log.New(t.Output(), "http: ", 0)
	srv.StartTLS()
	t.Cleanup(func() { closeServer(srv) })
	return srv
}

func closeServer(srv *httptest.Server) {
	srv.CloseClientConnections()
	srv.Close()
}

// noPanic fails the test if h panics (net/http would swallow it).
func noPanic(t *testing.T, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				t.Errorf("handler panicked: %v", v)
				panic(v)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func (n *testNode) addr(link int) string { return n.srvs[link].Listener.Addr().String() }

func msg(from, to, index uint64) *raftpb.Message {
	return &raftpb.Message{
		Type:    raftpb.MsgApp.Enum(),
		From:    new(from),
		To:      new(to),
		Term:    new(uint64(3)),
		Index:   new(index),
		Entries: []*raftpb.Entry{{Index: new(index + 1), Term: new(uint64(3)), Data: []byte(fmt.Sprint("entry ", index+1))}},
	}
}

// warm marks the messages connect sends; expect skips them.
const (
	warm  = ^uint64(0)
	fence = warm - 1
)

// connect sends messages from one node to another until one arrives, and
// returns it. Messages queued while a stream is being set up may be dropped
// (by design); once connect returns, the stream is up and, unless it
// breaks, carries everything sent; no warm-up message is left to arrive.
func connect(t *testing.T, from, to *testNode) delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		from.tr.Send([]*raftpb.Message{msg(from.id, to.id, warm)})
		select {
		case first := <-to.got:
			// Messages on a stream stay in order: once a fence arrives,
			// all earlier warm-up messages have.
			from.tr.Send([]*raftpb.Message{msg(from.id, to.id, fence)})
			for {
				select {
				case d := <-to.got:
					if d.m.GetIndex() == fence {
						return first
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("node %d: fence from node %d lost", to.id, from.id)
				}
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("node %d cannot reach node %d", from.id, to.id)
	return delivery{}
}

// expect waits for count messages at node (warm-up ones aside) and returns
// them.
func (n *testNode) expect(t *testing.T, count int, within time.Duration) []delivery {
	t.Helper()
	var out []delivery
	timer := time.NewTimer(within)
	defer timer.Stop()
	for len(out) < count {
		select {
		case d := <-n.got:
			if d.m.GetIndex() != warm {
				out = append(out, d)
			}
		case <-timer.C:
			t.Fatalf("node %d: got %d messages within %v, want %d", n.id, len(out), within, count)
		}
	}
	return out
}

// expectNone checks that nothing arrives at node for a while.
func (n *testNode) expectNone(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case d := <-n.got:
		t.Fatalf("node %d: got %v, want nothing", n.id, d.m)
	case <-time.After(within):
	}
}

func TestExchange(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 1, nil)
	n2 := newNode(t, keyA, 2, res, 1, nil)
	res.set(1, n1.addr(0))
	res.set(2, n2.addr(0))
	connect(t, n1, n2)
	connect(t, n2, n1)

	const count = 500
	snap := &raftpb.Message{
		Type: raftpb.MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(3)),
		Snapshot: &raftpb.Snapshot{
			Data:     bytes.Repeat([]byte("snapshot"), 1<<18), // 2 MiB
			Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(10)), Term: new(uint64(3)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}}},
		},
	}
	go func() {
		for i := range uint64(count) {
			n1.tr.Send([]*raftpb.Message{msg(1, 2, i)})
			n2.tr.Send([]*raftpb.Message{msg(2, 1, i)})
		}
		n1.tr.Send([]*raftpb.Message{snap})
	}()
	for _, tc := range []struct {
		n    *testNode
		from uint64
		want int
	}{{n2, 1, count + 1}, {n1, 2, count}} {
		got := tc.n.expect(t, tc.want, 10*time.Second)
		for i, d := range got[:count] {
			if want := msg(tc.from, tc.n.id, uint64(i)); !proto.Equal(d.m, want) {
				t.Fatalf("node %d: message %d = %v, want %v (in order)", tc.n.id, i, d.m, want)
			}
		}
		if tc.want > count && !proto.Equal(got[count].m, snap) {
			t.Errorf("snapshot arrived changed: %d bytes", len(got[count].m.GetSnapshot().GetData()))
		}
	}
	select {
	case r := <-n1.tr.Snapshots():
		if r != (SnapshotReport{To: 2}) {
			t.Errorf("snapshot report %+v, want success to 2", r)
		}
	case <-time.After(time.Second):
		t.Error("no snapshot report")
	}
	st := n1.tr.Stats()
	if len(st) != 1 || st[0].Node != 2 || !st[0].Connected || st[0].Addr != n2.addr(0) || st[0].Sent < count+1 {
		t.Errorf("n1 stats %+v", st)
	}
	// To self and to 0: ignored, no sender started.
	n1.tr.Send([]*raftpb.Message{msg(1, 1, 0), msg(1, 0, 0)})
	if st := n1.tr.Stats(); len(st) != 1 {
		t.Errorf("messages to self or 0 started senders: %+v", st)
	}
}

// TestOtherClusterRefused: a node whose certificate comes from another
// cluster key gets nothing delivered, in either direction.
func TestOtherClusterRefused(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 1, nil)
	intruder := newNode(t, keyB, 2, res, 1, nil)
	res.set(1, n1.addr(0))
	res.set(2, intruder.addr(0))

	for i := range uint64(20) {
		intruder.tr.Send([]*raftpb.Message{msg(2, 1, i)})
		n1.tr.Send([]*raftpb.Message{msg(1, 2, i)})
		time.Sleep(10 * time.Millisecond)
	}
	n1.expectNone(t, 500*time.Millisecond)
	intruder.expectNone(t, 0)
	for _, n := range []*testNode{n1, intruder} {
		select {
		case id := <-n.tr.Unreachable():
			if id != 3-n.id {
				t.Errorf("node %d: unreachable %d", n.id, id)
			}
		default:
			t.Errorf("node %d: no unreachable report", n.id)
		}
		if st := n.tr.Stats(); len(st) != 1 || st[0].Connected || st[0].Sent != 0 {
			t.Errorf("node %d: stats %+v", n.id, st)
		}
	}
}

// TestHandlerRefuses covers the checks of a stream request.
func TestHandlerRefuses(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 1, func(c *Config) {
		// n3 has a valid certificate but is not (yet) a member.
		c.Authorize = func(certName string, from uint64) bool {
			return certName == "n"+strconv.FormatUint(from, 10) && from != 3
		}
	})
	ca := mustCA(t, keyA)
	cert2, err := ca.IssueNode("n2", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		cert   *tls.Certificate
		from   string
		to     string
		method string
		want   int
	}{
		{"no client certificate (the CLI)", nil, "2", "1", "POST", http.StatusUnauthorized},
		{"certificate of n2 claiming node 3", &cert2, "3", "1", "POST", http.StatusForbidden},
		{"stream meant for node 5", &cert2, "2", "5", "POST", http.StatusMisdirectedRequest},
		{"no sender", &cert2, "", "1", "POST", http.StatusBadRequest},
		{"sender is the receiver", &cert2, "1", "1", "POST", http.StatusBadRequest},
		{"GET", &cert2, "2", "1", "GET", http.StatusMethodNotAllowed},
	}
	for i, tt := range tests {
		tr := &http.Transport{TLSClientConfig: pki.ClientTLS(ca, tt.cert, ""), ForceAttemptHTTP2: true}
		req, _ := http.NewRequest(tt.method, "https://"+n1.addr(0)+StreamPath, strings.NewReader(""))
		req.Header.Set(HeaderFrom, tt.from)
		req.Header.Set(HeaderTo, tt.to)
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Errorf("%d (%s): %v", i, tt.name, err)
		} else {
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%d (%s): status %d, want %d", i, tt.name, resp.StatusCode, tt.want)
			}
		}
		tr.CloseIdleConnections()
	}

	// The Transport logs a refusal and reports the peer unreachable.
	n3 := newNode(t, keyA, 3, res, 1, nil)
	res.set(1, n1.addr(0))
	n3.tr.Send([]*raftpb.Message{msg(3, 1, 0)})
	select {
	case <-n3.tr.Unreachable():
	case <-time.After(5 * time.Second):
		t.Error("refused stream not reported unreachable")
	}
	n1.expectNone(t, 0)
}

// deadAddrs returns an address that refuses connections and one that
// accepts TCP but never answers (a half-dead host).
func deadAddrs(t *testing.T) (refused, silent string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused = ln.Addr().String()
	ln.Close()
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		sl.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return refused, sl.Addr().String()
}

// TestLinkFailover: the preferred link of the peer is dead; messages take the
// next one.
func TestLinkFailover(t *testing.T) {
	refused, silent := deadAddrs(t)
	for i, dead := range []string{refused, silent} {
		res := newResolver()
		n1 := newNode(t, keyA, 1, res, 0, nil)
		n2 := newNode(t, keyA, 2, res, 1, nil)
		res.set(2, dead, n2.addr(0))
		connect(t, n1, n2)
		for j := range uint64(10) {
			n1.tr.Send([]*raftpb.Message{msg(1, 2, j)})
		}
		got := n2.expect(t, 10, 5*time.Second)
		for j, d := range got {
			if d.m.GetIndex() != uint64(j) {
				t.Errorf("%d: message %d has index %d", i, j, d.m.GetIndex())
			}
		}
		if st := n1.tr.Stats(); len(st) != 1 || st[0].Addr != n2.addr(0) {
			t.Errorf("%d: stats %+v, want streaming to %s", i, st, n2.addr(0))
		}
		n1.tr.Close()
	}
}

// TestLinkLostMidStream: a peer with two links loses the one in use; the
// stream moves to the other.
func TestLinkLostMidStream(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 0, nil)
	n2 := newNode(t, keyA, 2, res, 2, nil)
	res.set(2, n2.addr(0), n2.addr(1))

	if d := connect(t, n1, n2); d.link != 0 {
		t.Fatalf("first message on link %d, want 0", d.link)
	}
	closeServer(n2.srvs[0]) // link 0 goes away; the resolver still lists it first

	// Keep sending, as raft would, until messages arrive on link 1.
	deadline := time.Now().Add(10 * time.Second)
	for i := uint64(1); ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no message on link 1")
		}
		n1.tr.Send([]*raftpb.Message{msg(1, 2, i)})
		select {
		case d := <-n2.got:
			if d.link != 1 {
				t.Fatalf("message %d on link %d after link 0 closed", d.m.GetIndex(), d.link)
			}
			if st := n1.tr.Stats(); st[0].Addr != n2.addr(1) {
				t.Errorf("stats %+v", st)
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestFailback: after failing over, the sender returns to the preferred
// link once it answers again.
func TestFailback(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 0, nil)
	n1.tr.failbackEvery = 100 * time.Millisecond
	n2 := newNode(t, keyA, 2, res, 1, nil) // link 1 only, for now
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	preferred := ln.Addr().String()
	ln.Close()
	res.set(2, preferred, n2.addr(0))
	connect(t, n1, n2)

	ln, err = net.Listen("tcp", preferred)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", preferred, err)
	}
	n2.serve(t, 9, ln)
	deadline := time.Now().Add(10 * time.Second)
	for i := uint64(1); ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("sender did not move back to the preferred link")
		}
		n1.tr.Send([]*raftpb.Message{msg(1, 2, i)})
		select {
		case d := <-n2.got:
			if d.link == 9 {
				return
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestSendNeverBlocks: with the peer unreachable and a small queue, Send
// returns at once and counts what it drops.
func TestSendNeverBlocks(t *testing.T) {
	_, silent := deadAddrs(t)
	res := newResolver()
	res.set(2, silent)
	n1 := newNode(t, keyA, 1, res, 0, func(c *Config) { c.QueueSize = 4 })
	start := time.Now()
	for i := range uint64(10000) {
		n1.tr.Send([]*raftpb.Message{msg(1, 2, i)})
	}
	n1.tr.Send([]*raftpb.Message{{Type: raftpb.MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2))}})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Send took %v", d)
	}
	if got := n1.tr.Dropped(); got < 10000-4 {
		t.Errorf("Dropped = %d, want at least %d", got, 10000-4)
	}
	select {
	case id := <-n1.tr.Unreachable():
		if id != 2 {
			t.Errorf("unreachable %d", id)
		}
	default:
		t.Error("no unreachable report")
	}
	select {
	case r := <-n1.tr.Snapshots():
		if r != (SnapshotReport{To: 2, Failed: true}) {
			t.Errorf("snapshot report %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Error("dropped snapshot not reported")
	}
}

// rawStream posts body to node's stream endpoint as node 2 of the cluster
// and returns when the receiver has ended the stream.
func rawStream(t *testing.T, n *testNode, body io.Reader) {
	t.Helper()
	cert, err := n.ca.IssueNode("n2", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: pki.ClientTLS(n.ca, &cert, ""), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "https://"+n.addr(0)+StreamPath, body)
	req.Header.Set(HeaderFrom, "2")
	req.Header.Set(HeaderTo, strconv.FormatUint(n.id, 10))
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	io.Copy(io.Discard, resp.Body) // returns when the receiver closes the stream
}

func frame(t *testing.T, m *raftpb.Message) []byte {
	b, err := appendFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawFrame(version byte, length uint32, payload []byte) []byte {
	b := []byte{version, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], length)
	return append(b, payload...)
}

// endless is a body that never ends unless the receiver stops reading.
type endless struct {
	prefix []byte
	once   sync.Once
	done   chan struct{}
}

func (e *endless) Read(p []byte) (int, error) {
	if len(e.prefix) > 0 {
		n := copy(p, e.prefix)
		e.prefix = e.prefix[n:]
		return n, nil
	}
	<-e.done
	return 0, io.EOF
}

// Close is called by the HTTP/2 client when the receiver ended the stream.
func (e *endless) Close() error {
	e.once.Do(func() { close(e.done) })
	return nil
}

// TestGarbageFrames: a frame that cannot be read ends the stream, after the
// good frames before it were delivered; nothing panics.
func TestGarbageFrames(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 1, nil)
	good := frame(t, msg(2, 1, 7))
	tests := []struct {
		name    string
		garbage []byte
	}{
		{"unknown version", rawFrame(2, uint32(len(good)-5), good[5:])},
		{"version 0", rawFrame(0, 0, nil)},
		{"length over the cap", rawFrame(FrameVersion, MaxFrameSize+1, []byte("x"))},
		{"length 4 GiB", rawFrame(FrameVersion, 0xffffffff, nil)},
		{"truncated varint", rawFrame(FrameVersion, 2, []byte{0x08, 0xff})},
		{"field number 0", rawFrame(FrameVersion, 2, []byte{0x00, 0x01})},
		{"wrong sender", frame(t, msg(3, 1, 7))},
		{"wrong receiver", frame(t, msg(2, 4, 7))},
		{"empty message", rawFrame(FrameVersion, 0, nil)},
	}
	for i, tt := range tests {
		// The body stays open after the garbage: only the receiver can end
		// the stream.
		body := &endless{prefix: slices.Concat(good, tt.garbage, good), done: make(chan struct{})}
		rawStream(t, n1, body)
		body.Close()
		got := n1.expect(t, 1, time.Second)
		if got[0].m.GetIndex() != 7 {
			t.Errorf("%d (%s): delivered %v", i, tt.name, got[0].m)
		}
		select {
		case d := <-n1.got:
			t.Errorf("%d (%s): delivered %v after the bad frame", i, tt.name, d.m)
		default:
		}
	}
	// A truncated frame at the end of a stream, and a clean end.
	rawStream(t, n1, bytes.NewReader(good[:len(good)-1]))
	rawStream(t, n1, bytes.NewReader(slices.Concat(good, good)))
	if got := n1.expect(t, 2, time.Second); len(got) != 2 {
		t.Errorf("got %d", len(got))
	}
	n1.expectNone(t, 0)
}

func TestFrameRoundTrip(t *testing.T) {
	var buf []byte
	var want []*raftpb.Message
	for i := range uint64(100) {
		m := msg(1, 2, i)
		want = append(want, m)
		var err error
		if buf, err = appendFrame(buf, m); err != nil {
			t.Fatal(err)
		}
	}
	big := &raftpb.Message{Type: raftpb.MsgSnap.Enum(), Snapshot: &raftpb.Snapshot{Data: make([]byte, 3<<20)}}
	want = append(want, big, msg(1, 2, 100))
	buf, _ = appendFrame(buf, big)
	buf, _ = appendFrame(buf, want[len(want)-1])
	fr := newFrameReader(bytes.NewReader(buf))
	for i, w := range want {
		m, err := fr.next()
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !proto.Equal(m, w) {
			t.Fatalf("%d: got %v, want %v", i, m, w)
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Errorf("at end: %v, want io.EOF", err)
	}
	if fr.buf.Cap() > keepReadBuf && fr.buf.Len() < keepReadBuf {
		t.Errorf("read buffer of %d bytes kept after a small frame", fr.buf.Cap())
	}

	huge := &raftpb.Message{Snapshot: &raftpb.Snapshot{Data: make([]byte, MaxFrameSize)}}
	if b, err := appendFrame([]byte("keep"), huge); err == nil || string(b) != "keep" {
		t.Errorf("appendFrame(too large) = %d bytes, %v", len(b), err)
	}
}

func FuzzFrameReader(f *testing.F) {
	good, _ := appendFrame(nil, msg(2, 1, 7))
	f.Add(good)
	f.Add(rawFrame(2, 0, nil))
	f.Add(rawFrame(FrameVersion, MaxFrameSize+1, nil))
	f.Add(rawFrame(FrameVersion, 2, []byte{0x08, 0xff}))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data))
		for range 1000 {
			if _, err := fr.next(); err != nil {
				return
			}
		}
	})
}

// TestCloseNoLeak: Close ends senders, inbound streams and connections.
func TestCloseNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("streams", func(t *testing.T) {
		res := newResolver()
		n1 := newNode(t, keyA, 1, res, 2, nil)
		n2 := newNode(t, keyA, 2, res, 2, nil)
		res.set(1, n1.addr(0), n1.addr(1))
		res.set(2, n2.addr(0), n2.addr(1))
		_, silent := deadAddrs(t)
		res.set(3, silent) // n1's sender to 3 is stuck dialing at Close
		connect(t, n1, n2)
		connect(t, n2, n1)
		for i := range uint64(50) {
			n1.tr.Send([]*raftpb.Message{msg(1, 2, i), msg(1, 3, i)})
			n2.tr.Send([]*raftpb.Message{msg(2, 1, i)})
		}
		n2.expect(t, 50, 5*time.Second)
		n1.expect(t, 50, 5*time.Second)
		// Close one side only: the other's inbound stream must end too, and
		// Close must not wait for the servers.
		n1.tr.Close()
		n1.tr.Close()                                // idempotent
		n1.tr.Send([]*raftpb.Message{msg(1, 2, 99)}) // after Close: nothing
	})
}

// TestReceiverEndsStream: when the receiver ends a stream (here: deliver
// fails), the sender notices, reconnects, and later messages arrive.
func TestReceiverEndsStream(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 0, nil)
	n2 := newNode(t, keyA, 2, res, 0, nil)
	n2.refuse = func(m *raftpb.Message) error {
		if m.GetIndex() == 1 {
			return errors.New("store busy")
		}
		return nil
	}
	n2.srvs = append(n2.srvs, n2.serve(t, 0, nil))
	res.set(2, n2.addr(0))
	connect(t, n1, n2)
	for len(n1.tr.Unreachable()) > 0 {
		<-n1.tr.Unreachable() // from setting up the stream, if any
	}
	n1.tr.Send([]*raftpb.Message{msg(1, 2, 0), msg(1, 2, 1)})
	if got := n2.expect(t, 1, 5*time.Second); got[0].m.GetIndex() != 0 {
		t.Fatalf("got %v", got[0].m)
	}
	select {
	case <-n1.tr.Unreachable():
	case <-time.After(5 * time.Second):
		t.Fatal("ended stream not noticed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := uint64(2); ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no message after the receiver ended the stream")
		}
		n1.tr.Send([]*raftpb.Message{msg(1, 2, i)})
		select {
		case <-n2.got:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestRemove(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 0, nil)
	n2 := newNode(t, keyA, 2, res, 1, nil)
	res.set(2, n2.addr(0))
	connect(t, n1, n2)
	n1.tr.Remove(2)
	if st := n1.tr.Stats(); len(st) != 0 {
		t.Errorf("stats after Remove: %+v", st)
	}
	connect(t, n1, n2)
}

// proxy forwards TCP to target until frozen: then it neither forwards nor
// closes, like a link whose cable was pulled.
type proxy struct {
	ln     net.Listener
	frozen chan struct{}
	once   sync.Once
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, frozen: make(chan struct{})}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Go(func() { p.pipe(u, c) })
			p.wg.Go(func() { p.pipe(c, u) })
		}
	})
	t.Cleanup(p.close)
	return p
}

func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			if err != nil {
				return // and never tell the other side
			}
			continue // swallow
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *proxy) addr() string { return p.ln.Addr().String() }
func (p *proxy) freeze()      { p.once.Do(func() { close(p.frozen) }) }

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestLinkGoesSilent: the link in use stops carrying packets without any
// error (cable pulled, switch dead). The sender notices within a few
// seconds and moves to the other link.
func TestLinkGoesSilent(t *testing.T) {
	res := newResolver()
	n1 := newNode(t, keyA, 1, res, 0, nil)
	n2 := newNode(t, keyA, 2, res, 2, nil)
	link0 := newProxy(t, n2.addr(0))
	res.set(2, link0.addr(), n2.addr(1))

	if d := connect(t, n1, n2); d.link != 0 {
		t.Fatalf("first message on link %d, want 0", d.link)
	}
	link0.freeze()
	start := time.Now()
	for i := uint64(1); ; i++ {
		if time.Since(start) > 15*time.Second {
			t.Fatal("no message on link 1 after link 0 went silent")
		}
		n1.tr.Send([]*raftpb.Message{msg(1, 2, i)})
		select {
		case d := <-n2.got:
			if d.link == 1 {
				t.Logf("failed over after %v", time.Since(start).Round(time.Millisecond))
				return
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
}
