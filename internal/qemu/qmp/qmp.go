// Package qmp is Vigil's own client for the QEMU Machine Protocol.
//
// Why not a public Go QMP library: the ones we looked at read the socket
// line by line with a bounded buffer (query-qmp-schema answers with more
// than 100 KB on one line), or deliver events on an unbuffered channel so
// that a consumer that does not read stalls every command. Here one reader
// goroutine decodes a JSON stream of any size, matches replies to commands
// by "id", and hands events to a buffered channel that drops the oldest
// event rather than block.
//
// The protocol (docs/interop/qmp-spec.rst in QEMU): on connect the server
// sends a greeting {"QMP": {...}}; the client must send qmp_capabilities
// before anything else. Then the client sends {"execute", "arguments",
// "id"} objects and the server answers each with {"return"} or {"error":
// {"class", "desc"}} carrying the same id, in any order relative to
// asynchronous {"event", "data", "timestamp"} messages.
package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is the error (wrapped) of every Execute that cannot get its
// reply because the connection is gone: closed by Close, by QEMU exiting,
// or by a stream that could not be decoded any more.
var ErrClosed = errors.New("qmp: connection closed")

// DefaultEventBuffer is how many events wait for the consumer before the
// oldest is dropped, unless Dialer.EventBuffer says otherwise.
const DefaultEventBuffer = 256

// Error is an error reply from QEMU. Class is QEMU's error class
// ("GenericError", "CommandNotFound", "DeviceNotFound", ...); most errors are
// GenericError, so Desc is what tells them apart.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Event is an asynchronous QMP event, e.g. SHUTDOWN, STOP, RESUME,
// MIGRATION. Data is the event's "data" member as sent (nil when absent).
type Event struct {
	Name      string
	Data      json.RawMessage
	Timestamp time.Time
}

// DecodeData unmarshals the event's data into v.
func (e Event) DecodeData(v any) error {
	if len(e.Data) == 0 {
		return fmt.Errorf("qmp: event %s has no data", e.Name)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("qmp: event %s: decode data: %w", e.Name, err)
	}
	return nil
}

// Greeting is what the server announced on connect.
type Greeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// Dialer holds the options of a connection. The zero value is ready to use.
type Dialer struct {
	// EventBuffer is the capacity of the Events channel; 0 means
	// DefaultEventBuffer.
	EventBuffer int
	// Logger receives protocol oddities (unexpected ids, dropped events);
	// nil means slog.Default().
	Logger *slog.Logger
}

// Dial connects to a QMP unix socket with a zero Dialer.
func Dial(ctx context.Context, socketPath string) (*Conn, error) {
	var d Dialer
	return d.Dial(ctx, socketPath)
}

// Dial connects to the QMP unix socket at socketPath, reads the greeting
// and negotiates capabilities, all bounded by ctx.
//
// NB: a QEMU chardev socket serves one client at a time. While another
// client holds the monitor, connect succeeds but no greeting comes, and Dial
// waits until ctx is done.
func (d *Dialer) Dial(ctx context.Context, socketPath string) (*Conn, error) {
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", socketPath, err)
	}
	c, err := d.NewConn(ctx, nc)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", socketPath, err)
	}
	return c, nil
}

// NewConn runs the QMP handshake on an established connection, bounded by
// ctx, and returns the client. The Conn owns nc from then on, also when the
// handshake fails.
func (d *Dialer) NewConn(ctx context.Context, nc net.Conn) (*Conn, error) {
	n := d.EventBuffer
	if n <= 0 {
		n = DefaultEventBuffer
	}
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Conn{
		nc:       nc,
		log:      log,
		events:   make(chan Event, n),
		greeting: make(chan Greeting, 1),
		pending:  make(map[string]chan reply),
		done:     make(chan struct{}),
		wsem:     make(chan struct{}, 1),
	}
	go c.readLoop()

	select {
	case g := <-c.greeting:
		c.greet = g
	case <-c.done:
		return nil, fmt.Errorf("qmp: wait for greeting: %w", c.err)
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("qmp: wait for greeting: %w", ctx.Err())
	}
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp: negotiate capabilities: %w", err)
	}
	return c, nil
}

// Conn is a QMP client connection. Its methods are safe for concurrent use.
type Conn struct {
	nc       net.Conn
	log      *slog.Logger
	greet    Greeting
	greeting chan Greeting // reader → handshake, once

	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan reply // by id; guarded by mu

	// wsem serializes writers; a channel rather than a mutex so that a
	// writer stuck behind a stalled peer can give up with its ctx.
	wsem chan struct{}
	// wdlMu guards the write deadline against a late ctx cancellation;
	// wgen counts writes.
	wdlMu sync.Mutex
	wgen  uint64

	events  chan Event
	dropped atomic.Uint64

	done      chan struct{} // closed when the reader has stopped
	err       error         // why; set before done is closed
	closeOnce sync.Once
}

type reply struct {
	ret json.RawMessage
	err *Error
}

// Greeting returns what QEMU announced on connect (its version).
func (c *Conn) Greeting() Greeting { return c.greet }

// Events returns the channel of asynchronous events. It is buffered; when it
// is full the oldest event is dropped (see DroppedEvents) so that replies
// are never held up by an absent consumer. It is closed when the connection
// is gone.
func (c *Conn) Events() <-chan Event { return c.events }

// DroppedEvents is how many events were discarded because the Events
// channel was full.
func (c *Conn) DroppedEvents() uint64 { return c.dropped.Load() }

// Done is closed when the connection is gone; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up, and afterwards an error
// wrapping ErrClosed with the cause (EOF, a decode error, Close).
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close closes the connection. Pending and later Executes fail with
// ErrClosed. It waits for the reader goroutine to stop.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		// The reader notices the closed socket and reports why; mark the
		// cause as ours first so that it does not read as an I/O error.
		c.mu.Lock()
		if c.err == nil {
			c.err = fmt.Errorf("%w (closed by client)", ErrClosed)
		}
		c.mu.Unlock()
		c.nc.Close()
	})
	<-c.done
	return nil
}

// Execute runs a QMP command and, when result is not nil, unmarshals the
// command's "return" value into it. args, when not nil, is marshalled as the
// command's "arguments" (a struct with json tags or a map).
//
// An error reply from QEMU is returned wrapped as *Error (use errors.As).
// When ctx ends first, Execute returns ctx's error and a late reply is
// discarded; the command may still have run.
func (c *Conn) Execute(ctx context.Context, command string, args any, result any) error {
	if err := c.Err(); err != nil {
		return fmt.Errorf("qmp: execute %s: %w", command, err)
	}
	id := "vigil-" + strconv.FormatUint(c.nextID.Add(1), 10)
	msg := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("qmp: execute %s: encode arguments: %w", command, err)
	}

	ch := make(chan reply, 1)
	c.mu.Lock()
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}

	if err := c.write(ctx, b); err != nil {
		forget()
		return fmt.Errorf("qmp: execute %s: %w", command, err)
	}

	var r reply
	select {
	case r = <-ch:
	case <-c.done:
		// The reply may have been delivered just before the reader quit.
		select {
		case r = <-ch:
		default:
			forget()
			return fmt.Errorf("qmp: execute %s: %w", command, c.err)
		}
	case <-ctx.Done():
		forget()
		return fmt.Errorf("qmp: execute %s: %w", command, ctx.Err())
	}
	if r.err != nil {
		return fmt.Errorf("qmp: execute %s: %w", command, r.err)
	}
	if result != nil {
		if err := json.Unmarshal(r.ret, result); err != nil {
			return fmt.Errorf("qmp: execute %s: decode return: %w", command, err)
		}
	}
	return nil
}

// write sends one message, newline-terminated. A write that fails after
// part of the message went out leaves the stream unusable, so it closes the
// connection; a write abandoned before any byte left does not.
func (c *Conn) write(ctx context.Context, b []byte) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.err
	}
	defer func() { <-c.wsem }()

	// Let ctx interrupt a write blocked on a peer that does not read. The
	// generation check keeps a late AfterFunc from poisoning the deadline of
	// the next write.
	c.wdlMu.Lock()
	c.wgen++
	gen := c.wgen
	d, _ := ctx.Deadline() // zero: none
	c.nc.SetWriteDeadline(d)
	c.wdlMu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		c.wdlMu.Lock()
		if c.wgen == gen {
			c.nc.SetWriteDeadline(time.Unix(1, 0))
		}
		c.wdlMu.Unlock()
	})
	defer func() {
		stop()
		c.wdlMu.Lock()
		c.wgen++
		c.wdlMu.Unlock()
	}()

	b = append(b, '\n')
	n, err := c.nc.Write(b)
	if err == nil {
		return nil
	}
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		// Nothing went out: the stream is intact.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return context.DeadlineExceeded
	}
	c.nc.Close()
	if ctx.Err() != nil {
		return fmt.Errorf("write: %w (connection closed: %w)", ctx.Err(), ErrClosed)
	}
	return fmt.Errorf("write: %w: %w", ErrClosed, err)
}

// message is any server message; which fields are set tells the kind.
type message struct {
	QMP       *Greeting       `json:"QMP"`
	ID        json.RawMessage `json:"id"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// readLoop is the only reader of the socket and the only sender on events.
// It stops at the first error that leaves the stream undecodable (EOF,
// truncated or malformed JSON); a well-formed message of an unexpected shape
// is logged and skipped.
func (c *Conn) readLoop() {
	dec := json.NewDecoder(c.nc)
	var err error
	for {
		var raw json.RawMessage
		if err = dec.Decode(&raw); err != nil {
			break
		}
		c.handle(raw)
	}

	c.mu.Lock()
	if c.err == nil {
		if errors.Is(err, io.EOF) {
			c.err = ErrClosed
		} else {
			c.err = fmt.Errorf("%w: read: %w", ErrClosed, err)
		}
	}
	// Executes waiting for a reply watch done; forget them all.
	clear(c.pending)
	c.mu.Unlock()
	c.nc.Close()
	close(c.events)
	close(c.done)
}

func (c *Conn) handle(raw json.RawMessage) {
	var m message
	if err := json.Unmarshal(raw, &m); err != nil {
		c.log.Warn("qmp: skip message of unexpected shape", "err", err, "msg", truncate(raw))
		return
	}
	switch {
	case m.QMP != nil:
		select {
		case c.greeting <- *m.QMP:
		default:
			c.log.Warn("qmp: skip repeated greeting")
		}
	case m.Event != "":
		ev := Event{Name: m.Event, Data: m.Data}
		if m.Timestamp != nil {
			ev.Timestamp = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
		}
		c.deliver(ev)
	case m.ID != nil:
		var id string
		if err := json.Unmarshal(m.ID, &id); err != nil {
			c.log.Warn("qmp: skip reply with foreign id", "id", string(m.ID))
			return
		}
		c.mu.Lock()
		ch, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !ok {
			// An Execute that gave up on its ctx, or a confused server.
			c.log.Debug("qmp: skip reply nobody waits for", "id", id)
			return
		}
		r := reply{ret: m.Return, err: m.Error}
		if r.err == nil && r.ret == nil {
			r.err = &Error{Class: "VigilProtocolError", Desc: "reply has neither return nor error"}
		}
		ch <- r // buffered, one reply per id
	default:
		// QEMU answers a request it could not parse with an error without
		// id; we never send such requests.
		c.log.Warn("qmp: skip message without id or event", "msg", truncate(raw))
	}
}

// deliver queues ev without ever blocking: when the buffer is full it drops
// the oldest event. Only the reader sends, so after one receive there is
// room.
func (c *Conn) deliver(ev Event) {
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case old := <-c.events:
			if c.dropped.Add(1) == 1 {
				c.log.Warn("qmp: event buffer full, dropping oldest events", "dropped", old.Name)
			}
		default:
		}
	}
}

func truncate(b []byte) string {
	const max = 200
	b = bytes.TrimSpace(b)
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
