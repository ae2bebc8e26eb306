package guestimage

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDefaultDir(t *testing.T) {
	t.Setenv("VIGIL_CACHE_DIR", "/v")
	t.Setenv("XDG_CACHE_HOME", "/x")
	t.Setenv("HOME", "/h")
	if d := DefaultDir(); d != "/v" {
		t.Errorf("with VIGIL_CACHE_DIR: %s", d)
	}
	t.Setenv("VIGIL_CACHE_DIR", "")
	if d := DefaultDir(); d != "/x/vigil/guest" {
		t.Errorf("with XDG_CACHE_HOME: %s", d)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	if d := DefaultDir(); d != "/h/.cache/vigil/guest" {
		t.Errorf("with HOME: %s", d)
	}
}

func TestLookupIncomplete(t *testing.T) {
	dir := t.TempDir()
	if _, err := Lookup(dir); err == nil {
		t.Fatal("empty dir: no error")
	}
	os.WriteFile(filepath.Join(dir, "stamp"), []byte("vigil-guest-image v1\n"), 0o644)
	if _, err := Lookup(dir); err == nil {
		t.Fatal("stamp but no files: no error")
	}
}

var (
	imageOnce sync.Once
	image     Paths
	imageErr  error
	imageTook time.Duration
)

// testImage builds (or finds) the image in DefaultDir, or skips.
func testImage(t *testing.T) Paths {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the guest image and boots it under TCG: seconds")
	}
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		image, imageErr = Ensure(ctx, "")
		imageTook = time.Since(start)
	})
	if errors.Is(imageErr, ErrUnavailable) {
		t.Skipf("cannot build the guest image here: %v", imageErr)
	}
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return image
}

func needQEMU(t *testing.T) string {
	t.Helper()
	q, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	return q
}

func TestEnsure(t *testing.T) {
	p := testImage(t)
	t.Logf("image %+v (Ensure took %v)", p, imageTook)
	for _, f := range []string{p.Kernel, p.Initrd} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !strings.Contains(p.Cmdline, "console=ttyS0") {
		t.Errorf("cmdline %q", p.Cmdline)
	}
	if p.PVH {
		if err := checkPVH(p.Kernel); err != nil {
			t.Error(err)
		}
	} else {
		t.Logf("NOTE: no PVH vmlinux; booting the slower bzImage %s", p.Kernel)
	}
	// A complete dir returns at once.
	start := time.Now()
	p2, err := Ensure(context.Background(), p.Dir)
	if err != nil || p2 != p {
		t.Fatalf("second Ensure: %+v, %v; want %+v", p2, err, p)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Ensure took %v", d)
	}
}

// checkPVH checks for XEN_ELFNOTE_PHYS32_ENTRY, which QEMU's -kernel needs
// to boot an ELF as PVH.
func checkPVH(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return err
		}
		for len(b) >= 12 {
			namesz, descsz, typ := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
			name := b[12:]
			if int(namesz) <= len(name) && string(bytes.TrimRight(name[:namesz], "\x00")) == "Xen" && typ == 18 {
				return nil
			}
			n := 12 + int((namesz+3)&^3) + int((descsz+3)&^3)
			if n > len(b) {
				break
			}
			b = b[n:]
		}
	}
	return errors.New(path + ": no XEN_ELFNOTE_PHYS32_ENTRY note")
}

// guest is a QEMU process running the test guest.
type guest struct {
	t     *testing.T
	dir   string
	cmd   *exec.Cmd
	start time.Time
	done  chan struct{}
	err   error    // from Wait, once done is closed
	con   net.Conn // to the serial console, once typed on
}

func boot(t *testing.T, p Paths) *guest {
	t.Helper()
	return bootCmdline(t, p, p.Cmdline)
}

// bootCmdline boots the guest with the kernel command line cmdline.
func bootCmdline(t *testing.T, p Paths, cmdline string) *guest {
	t.Helper()
	q := needQEMU(t)
	dir := t.TempDir()
	g := &guest{t: t, dir: dir, done: make(chan struct{})}
	g.cmd = exec.Command(q,
		"-machine", "q35,accel=tcg", "-m", "128",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-kernel", p.Kernel, "-initrd", p.Initrd, "-append", cmdline,
		"-chardev", "socket,id=ser0,path="+dir+"/console.sock,server=on,wait=off,logfile="+dir+"/console.log",
		"-serial", "chardev:ser0",
		"-qmp", "unix:"+dir+"/qmp.sock,server=on,wait=off",
	)
	var stderr bytes.Buffer
	g.cmd.Stderr = &stderr
	g.start = time.Now()
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		g.err = g.cmd.Wait()
		if g.err != nil && stderr.Len() > 0 {
			g.err = errors.New(g.err.Error() + ": " + strings.TrimSpace(stderr.String()))
		}
		close(g.done)
	}()
	t.Cleanup(func() {
		select {
		case <-g.done:
		default:
			g.cmd.Process.Kill()
			<-g.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "console.log"))
			t.Logf("console.log:\n%s", b)
		}
	})
	return g
}

var (
	bootRE    = regexp.MustCompile(`(?m)^vigil-guest boot (\S+)\r?$`)
	counterRE = regexp.MustCompile(`(?m)^vigil-guest counter (\d+) boot=(\S+)\r?$`)
)

func (g *guest) console() string {
	b, _ := os.ReadFile(filepath.Join(g.dir, "console.log"))
	return string(b)
}

// waitFor polls the console log until ok holds, or fails the test.
func (g *guest) waitFor(what string, timeout time.Duration, ok func(log string) bool) {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ok(g.console()) {
			return
		}
		select {
		case <-g.done:
			if ok(g.console()) {
				return
			}
			g.t.Fatalf("QEMU exited (%v) before the console showed %s", g.err, what)
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("console did not show %s within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type counter struct {
	n    int
	boot string
}

func counters(log string) []counter {
	var cs []counter
	for _, m := range counterRE.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		cs = append(cs, counter{n, m[2]})
	}
	return cs
}

// waitCounter waits for the console to show counter n of the current boot.
func (g *guest) waitCounter(n int, timeout time.Duration) {
	g.t.Helper()
	g.waitFor("counter "+strconv.Itoa(n), timeout, func(log string) bool {
		cs := counters(log)
		return len(cs) > 0 && cs[len(cs)-1].n >= n
	})
}

func (g *guest) waitExit(timeout time.Duration) time.Duration {
	g.t.Helper()
	start := time.Now()
	select {
	case <-g.done:
		if g.err != nil {
			g.t.Fatalf("QEMU exited with %v", g.err)
		}
		return time.Since(start)
	case <-time.After(timeout):
		g.t.Fatalf("QEMU still running %v later", timeout)
		return 0
	}
}

func (g *guest) rssKiB() int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(g.cmd.Process.Pid) + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// qmp runs commands without arguments on the QMP socket.
func (g *guest) qmp(cmds ...string) {
	g.t.Helper()
	for _, cmd := range cmds {
		g.qmpCall(cmd, nil)
	}
}

// qmpCall runs one command with args (nil: none) on the QMP socket,
// speaking the protocol raw on a connection of its own, and returns its
// "return" value.
func (g *guest) qmpCall(cmd string, args any) json.RawMessage {
	g.t.Helper()
	var c net.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err = net.Dial("unix", filepath.Join(g.dir, "qmp.sock")); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	greeting, err := r.ReadBytes('\n')
	if err != nil || !bytes.Contains(greeting, []byte(`"QMP"`)) {
		g.t.Fatalf("QMP greeting %q: %v", greeting, err)
	}
	type request struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}
	var ret json.RawMessage
	for _, req := range []request{{Execute: "qmp_capabilities"}, {Execute: cmd, Arguments: args}} {
		b, _ := json.Marshal(req)
		if _, err := c.Write(append(b, '\n')); err != nil {
			g.t.Fatal(err)
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				g.t.Fatalf("QMP %s: %v", req.Execute, err)
			}
			var resp struct {
				Return json.RawMessage
				Error  *struct{ Class, Desc string }
			}
			if err := json.Unmarshal(line, &resp); err != nil {
				g.t.Fatalf("QMP %s: %q: %v", req.Execute, line, err)
			}
			if resp.Error != nil {
				g.t.Fatalf("QMP %s: %s: %s", req.Execute, resp.Error.Class, resp.Error.Desc)
			}
			if resp.Return != nil {
				ret = resp.Return
				break
			} // else an event
		}
	}
	return ret
}

// typeLine writes a line to the serial console. It keeps one connection
// per guest: QEMU's socket chardev serves one client at a time, and may drop
// what the guest has not read yet when the client goes.
func (g *guest) typeLine(line string) {
	g.t.Helper()
	if g.con == nil {
		c, err := net.Dial("unix", filepath.Join(g.dir, "console.sock"))
		if err != nil {
			g.t.Fatal(err)
		}
		g.t.Cleanup(func() { c.Close() })
		// Drain: QEMU writes the guest's output to the client a byte per
		// write, and a client that does not read fills the socket buffer
		// after a few hundred bytes, which stalls the guest's console.
		go io.Copy(io.Discard, c)
		g.con = c
	}
	if _, err := g.con.Write([]byte(line + "\n")); err != nil {
		g.t.Fatal(err)
	}
}

// bootTimeout allows for a loaded 2-core machine: an idle one boots in ~3 s.
const bootTimeout = 90 * time.Second

// The guest boots and counts; the ACPI power button powers it off.
func TestBootCountPowerdown(t *testing.T) {
	g := boot(t, testImage(t))
	g.waitCounter(1, bootTimeout)
	first := time.Since(g.start)
	g.waitCounter(3, 30*time.Second)
	t.Logf("first counter line %v after QEMU start; QEMU RSS %d MiB with -m 128", first.Round(time.Millisecond), g.rssKiB()/1024)

	log := g.console()
	boots := bootRE.FindAllStringSubmatch(log, -1)
	if len(boots) != 1 {
		t.Fatalf("%d boot lines, want 1", len(boots))
	}
	id := boots[0][1]
	cs := counters(log)
	for i, c := range cs {
		if c.n != i+1 || c.boot != id {
			t.Fatalf("counter line %d is %+v, want counter %d boot=%s", i, c, i+1, id)
		}
	}

	g.qmp("system_powerdown")
	took := g.waitExit(15 * time.Second)
	t.Logf("system_powerdown: QEMU exited %v later", took.Round(time.Millisecond))
	if !strings.Contains(g.console(), "vigil-guest poweroff reason=acpi-power-button boot="+id) {
		t.Error("the guest did not say it powered off for the power button")
	}
}

// "reboot" on the console: a new boot with a new boot id, counting from 1;
// then "poweroff": the guest shuts down by itself.
func TestConsoleRebootPoweroff(t *testing.T) {
	t.Parallel()
	g := boot(t, testImage(t))
	g.waitCounter(1, bootTimeout)
	g.typeLine("reboot")
	first, second := g.waitReboot()
	if first == second {
		t.Errorf("the reboot kept boot id %s", first)
	}
	g.typeLine("poweroff")
	took := g.waitExit(15 * time.Second)
	t.Logf("console poweroff: QEMU exited %v later", took.Round(time.Millisecond))
	if !strings.Contains(g.console(), "vigil-guest poweroff reason=console boot="+second) {
		t.Error("the guest did not say it powered off for the console")
	}
}

// waitReboot waits for a second boot whose counter has started, and returns
// the two boot ids.
func (g *guest) waitReboot() (first, second string) {
	g.t.Helper()
	g.waitFor("a second boot that counts", bootTimeout, func(log string) bool {
		b := bootRE.FindAllStringSubmatch(log, -1)
		if len(b) < 2 {
			return false
		}
		cs := counters(log)
		return len(cs) > 0 && cs[len(cs)-1].boot == b[1][1]
	})
	b := bootRE.FindAllStringSubmatch(g.console(), -1)
	if len(b) != 2 {
		g.t.Fatalf("%d boot lines, want 2", len(b))
	}
	for _, c := range counters(g.console()) {
		if c.boot != b[0][1] && c.boot != b[1][1] {
			g.t.Fatalf("counter %+v of no boot", c)
		}
	}
	return b[0][1], b[1][1]
}

// "panic" on the console: the kernel panics, reboots (panic=-1), and the
// new boot has a new boot id.
func TestConsolePanicReboots(t *testing.T) {
	t.Parallel()
	g := boot(t, testImage(t))
	g.waitCounter(2, bootTimeout)
	g.typeLine("panic")
	first, second := g.waitReboot()
	if first == second {
		t.Errorf("the reboot kept boot id %s", first)
	}
	if !strings.Contains(g.console(), "Kernel panic") {
		t.Error("no kernel panic on the console")
	}
	g.qmp("quit")
	g.waitExit(15 * time.Second)
}
