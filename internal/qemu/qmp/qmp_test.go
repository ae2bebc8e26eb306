package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const greeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}`

// session is the server side of one fake QMP connection.
type session struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder
}

type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

func (s *session) send(msg string) {
	if _, err := io.WriteString(s.conn, msg+"\r\n"); err != nil {
		s.t.Errorf("fake server: send: %v", err)
	}
}

func (s *session) recv() request {
	var r request
	if err := s.dec.Decode(&r); err != nil {
		s.t.Errorf("fake server: recv: %v", err)
	}
	return r
}

// reply answers req with a return value (raw JSON).
func (s *session) reply(req request, ret string) {
	s.send(fmt.Sprintf(`{"return": %s, "id": %s}`, ret, req.ID))
}

// waitClose reads until the client hangs up.
func (s *session) waitClose() {
	io.Copy(io.Discard, s.conn)
}

func (s *session) handshake() {
	s.send(greeting)
	r := s.recv()
	if r.Execute != "qmp_capabilities" {
		s.t.Errorf("fake server: first command %q, want qmp_capabilities", r.Execute)
	}
	s.reply(r, `{}`)
}

// fakeServer serves one connection on a unix socket in t.TempDir() with
// handler (after the handshake) and returns the socket path. The handler's
// connection is closed when it returns.
func fakeServer(t *testing.T, handler func(s *session)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		s := &session{t: t, conn: conn, dec: json.NewDecoder(conn)}
		s.handshake()
		handler(s)
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return path
}

func dial(t *testing.T, path string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := Dialer{Logger: slog.New(slog.DiscardHandler)}
	c, err := d.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestExecuteReturn(t *testing.T) {
	path := fakeServer(t, func(s *session) {
		r := s.recv()
		if r.Execute != "query-status" || string(r.Arguments) != `{"x":1}` {
			t.Errorf("got %+v", r)
		}
		s.reply(r, `{"status": "running", "running": true}`)
		s.waitClose()
	})
	c := dial(t, path)
	if got := c.Greeting().Version.QEMU.Major; got != 7 {
		t.Errorf("greeting major = %d, want 7", got)
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(testCtx(t), "query-status", map[string]int{"x": 1}, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" || !st.Running {
		t.Errorf("got %+v", st)
	}
}

func TestExecuteErrorReply(t *testing.T) {
	path := fakeServer(t, func(s *session) {
		r := s.recv()
		s.send(fmt.Sprintf(`{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": %s}`, r.ID))
		s.waitClose()
	})
	c := dial(t, path)
	err := c.Execute(testCtx(t), "nope", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if qe.Class != "CommandNotFound" || !strings.Contains(qe.Desc, "nope") {
		t.Errorf("got %+v", qe)
	}
	if want := "qmp: execute nope: CommandNotFound: The command nope has not been found"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	if errors.Is(err, ErrClosed) {
		t.Errorf("an error reply must not read as a closed connection")
	}
}

func TestMalformedJSONClosesConnection(t *testing.T) {
	path := fakeServer(t, func(s *session) {
		s.recv()
		s.send(`{"return": {}, "id": ]]]`)
		s.waitClose()
	})
	c := dial(t, path)
	err := c.Execute(testCtx(t), "query-status", nil, nil)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if !strings.Contains(err.Error(), "invalid character") {
		t.Errorf("err = %v, want the decode error in it", err)
	}
	if _, ok := <-c.Events(); ok {
		t.Errorf("events channel still open")
	}
	if err := c.Execute(testCtx(t), "query-status", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("later Execute: err = %v, want ErrClosed", err)
	}
}

func TestTruncatedReply(t *testing.T) {
	path := fakeServer(t, func(s *session) {
		s.recv()
		io.WriteString(s.conn, `{"return": {"status": "runn`)
		// the deferred close cuts the reply short
	})
	c := dial(t, path)
	err := c.Execute(testCtx(t), "query-status", nil, nil)
	if !errors.Is(err, ErrClosed) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want ErrClosed and io.ErrUnexpectedEOF", err)
	}
	<-c.Done()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err() = %v", c.Err())
	}
}

func TestUnexpectedMessagesAreSkipped(t *testing.T) {
	path := fakeServer(t, func(s *session) {
		r := s.recv()
		s.send(`{"return": {"n": 1}, "id": "not-ours"}`)
		s.send(`{"return": {"n": 2}, "id": 12345}`)
		s.send(`{"return": {"n": 3}}`)
		s.send(`{"error": "not an object", "id": "x"}`)
		s.send(`[1, 2, 3]`)
		s.send(greeting)
		s.reply(r, `{"n": 4}`)
		s.waitClose()
	})
	c := dial(t, path)
	var got struct{ N int }
	if err := c.Execute(testCtx(t), "x", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.N != 4 {
		t.Errorf("n = %d, want 4", got.N)
	}
}

func TestEventsInterleavedWithReplies(t *testing.T) {
	path := fakeServer(t, func(s *session) {
		r := s.recv()
		s.send(`{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "STOP"}`)
		s.send(`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1700000001, "microseconds": 0}}`)
		s.reply(r, `{"status": "paused"}`)
		s.send(`{"timestamp": {"seconds": 1700000002, "microseconds": 0}, "event": "RESUME"}`)
		s.waitClose()
	})
	c := dial(t, path)
	var st struct{ Status string }
	if err := c.Execute(testCtx(t), "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "paused" {
		t.Errorf("status %q", st.Status)
	}
	want := []string{"STOP", "SHUTDOWN", "RESUME"}
	for i, name := range want {
		select {
		case ev := <-c.Events():
			if ev.Name != name {
				t.Fatalf("event %d = %s, want %s", i, ev.Name, name)
			}
			if i == 0 && !ev.Timestamp.Equal(time.Unix(1700000000, 250000000)) {
				t.Errorf("timestamp %v", ev.Timestamp)
			}
			if name == "SHUTDOWN" {
				var d struct {
					Guest  bool
					Reason string
				}
				if err := ev.DecodeData(&d); err != nil || !d.Guest || d.Reason != "guest-shutdown" {
					t.Errorf("data %+v, %v", d, err)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%s) not delivered", i, name)
		}
	}
}

func TestLargeReply(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	path := fakeServer(t, func(s *session) {
		r := s.recv()
		s.reply(r, `{"blob": "`+big+`"}`)
		s.waitClose()
	})
	c := dial(t, path)
	var got struct{ Blob string }
	if err := c.Execute(testCtx(t), "big", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Blob != big {
		t.Errorf("blob of %d bytes, want %d", len(got.Blob), len(big))
	}
}

// An absent event consumer must not hold up replies; the oldest events go.
func TestUnreadEventsDropOldest(t *testing.T) {
	const n = 1000
	path := fakeServer(t, func(s *session) {
		r := s.recv()
		for i := range n {
			s.send(fmt.Sprintf(`{"event": "E%d", "timestamp": {"seconds": 1, "microseconds": 0}}`, i))
		}
		s.reply(r, `{}`)
		s.waitClose()
	})
	d := Dialer{EventBuffer: 8, Logger: slog.New(slog.DiscardHandler)}
	c, err := d.Dial(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Execute(testCtx(t), "x", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := c.DroppedEvents(); got != n-8 {
		t.Errorf("dropped %d, want %d", got, n-8)
	}
	for i := n - 8; i < n; i++ {
		if ev := <-c.Events(); ev.Name != fmt.Sprintf("E%d", i) {
			t.Fatalf("got %s, want E%d", ev.Name, i)
		}
	}
}

// Replies come back out of order; each caller gets its own.
func TestConcurrentExecutes(t *testing.T) {
	const n = 20
	path := fakeServer(t, func(s *session) {
		reqs := make([]request, n)
		for i := range reqs {
			reqs[i] = s.recv()
		}
		for i := n - 1; i >= 0; i-- {
			s.reply(reqs[i], string(reqs[i].Arguments))
		}
		s.waitClose()
	})
	c := dial(t, path)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var got struct{ I int }
			if err := c.Execute(ctx, "echo", map[string]int{"i": i}, &got); err != nil {
				t.Error(err)
			} else if got.I != i {
				t.Errorf("caller %d got %d", i, got.I)
			}
		})
	}
	wg.Wait()
}

func TestExecuteContextCanceled(t *testing.T) {
	path := fakeServer(t, func(s *session) {
		slow := s.recv()
		fast := s.recv()
		s.reply(slow, `{"who": "slow"}`) // too late: discarded
		s.reply(fast, `{"who": "fast"}`)
		s.waitClose()
	})
	c := dial(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.Execute(ctx, "slow", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	var got struct{ Who string }
	if err := c.Execute(testCtx(t), "fast", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Who != "fast" {
		t.Errorf("got reply of %q", got.Who)
	}
}

func TestCloseFailsPendingExecute(t *testing.T) {
	received := make(chan struct{})
	path := fakeServer(t, func(s *session) {
		s.recv()
		close(received)
		s.waitClose() // never answers
	})
	c := dial(t, path)
	errc := make(chan error, 1)
	go func() { errc <- c.Execute(testCtx(t), "hang", nil, nil) }()
	<-received
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if _, ok := <-c.Events(); ok {
		t.Errorf("events channel still open")
	}
}

func TestServerClosesBeforeGreeting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			conn.Close()
		}
	}()
	_, err = Dial(testCtx(t), path)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

// A server that accepts but never greets (QEMU while another client holds
// the monitor) leaves Dial waiting until ctx ends.
func TestDialWaitsForGreetingUntilContextEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, path)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
