package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// startQEMU starts a near-free QEMU (no machine, 16 MiB, TCG) with its QMP
// monitor on a unix socket and returns the socket path. The process is
// killed at cleanup.
func startQEMU(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	path := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-accel", "tcg", "-m", "16",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-chardev", "socket,id=qmp,path="+path+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return path
}

// dialRetry dials until QEMU has created its socket.
func dialRetry(t *testing.T, path string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		c, err := Dial(ctx, path)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRealQEMU(t *testing.T) {
	c := dialRetry(t, startQEMU(t))
	ctx := testCtx(t)

	if g := c.Greeting(); g.Version.QEMU.Major < 7 {
		t.Errorf("greeting %+v", g)
	}

	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" || !st.Running {
		t.Errorf("query-status = %+v", st)
	}

	// query-qmp-schema is one line of well over 100 KB.
	var schema []map[string]any
	if err := c.Execute(ctx, "query-qmp-schema", nil, &schema); err != nil {
		t.Fatal(err)
	}
	if len(schema) < 500 {
		t.Errorf("schema has %d entries", len(schema))
	}

	err := c.Execute(ctx, "no-such-command", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("err = %v, want CommandNotFound", err)
	}

	err = c.Execute(ctx, "migrate-set-parameters", map[string]any{"downtime-limit": "x"}, nil)
	if !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Errorf("err = %v, want GenericError", err)
	}

	if err := c.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Execute(ctx, "quit", nil, nil); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	var names []string
	for ev := range c.Events() { // closed when QEMU is gone
		names = append(names, ev.Name)
	}
	if len(names) != 2 || names[0] != "STOP" || names[1] != "SHUTDOWN" {
		t.Errorf("events %v, want [STOP SHUTDOWN]", names)
	}
	if err := c.Execute(ctx, "query-status", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("after quit: err = %v, want ErrClosed", err)
	}
}

func TestRealQEMUSchemaSize(t *testing.T) {
	c := dialRetry(t, startQEMU(t))
	var raw json.RawMessage
	if err := c.Execute(testCtx(t), "query-qmp-schema", nil, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) < 100_000 {
		t.Errorf("query-qmp-schema returned %d bytes, want > 100 KB", len(raw))
	}
}
