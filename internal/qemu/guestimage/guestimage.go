// Package guestimage provides the tiny test/demo guest that Vigil boots in
// real QEMU, under TCG when there is no /dev/kvm: a Debian cloud kernel and
// a busybox initramfs, built by scripts/guest-image.sh into a cache dir.
//
// The guest's /init prints on its serial console (ttyS0)
//
//	vigil-guest boot <bootid>               once per boot, then
//	vigil-guest counter N boot=<bootid>     every second, N = 1, 2, ...
//
// so a live migration shows the same boot id with N still increasing, and a
// reboot a new boot id. It powers off on an ACPI power button press (QMP
// system_powerdown) and reads lines from the console: "poweroff" powers it
// off from inside (guest-initiated shutdown), "reboot" reboots it, "panic"
// panics the kernel (which then reboots at once: panic=-1; add QEMU's
// -no-reboot to make QEMU exit instead, or -device pvpanic-pci for a
// GUEST_PANICKED event). Before it powers off it prints
// "vigil-guest poweroff reason=acpi-power-button" or "reason=console".
// 128 MiB of guest memory is enough.
//
// Busy mode, for live-migration benchmarks: with vigil.busy=MiB on the
// kernel command line (Paths.BusyCmdline), or after the console line
// "busy MiB", the guest keeps rewriting a MiB-sized file on its RAM-backed
// /tmp, without pause, with random data that changes every pass, so that a
// live migration finds those pages dirty again at every pass and must send
// them again. The guest prints "vigil-guest busy N MiB boot=<bootid>" when
// the loop starts ("busy 0" stops it: N = 0), or "vigil-guest busy error:
// ..." when the size is not a number or does not fit in /tmp (about half of
// the guest's memory; 32 MiB fits in a 128 MiB guest). The loop keeps one
// vCPU busy.
//
// The cache dir is keyed by the script: the first line of its stamp file
// holds the script's version and its SHA-256, and the script rebuilds the
// dir when they differ from its own, so an edited script (a new init, say)
// never runs with an image built by an older one.
//
// The power button is watched from just before the "vigil-guest boot" line:
// a system_powerdown sent earlier in the boot is lost, as on a real guest
// whose OS is not up yet, so callers should fall back to quit/kill after a
// timeout.
//
// With QEMU's socket chardev, a client connected to the console socket must
// keep reading it: QEMU writes the guest's output to the client a byte per
// write, so an idle client fills the socket buffer after a few hundred
// bytes, and from then on the guest's console output (its kernel messages,
// even a panic's, and the counter lines) stalls. The logfile= of the
// chardev needs no client.
//
// Boot it with
//
//	qemu-system-x86_64 -machine q35,accel=tcg -m 128 -nodefaults \
//	  -kernel P.Kernel -initrd P.Initrd -append P.Cmdline -serial ...
//
// P.Kernel is the uncompressed PVH ELF vmlinux when the kernel has a PVH
// entry (QEMU boots it about twice as fast as the bzImage), else vmlinuz.
package guestimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ScriptPath is the builder, relative to the repository root.
const ScriptPath = "scripts/guest-image.sh"

// BusyParam is the kernel command line option of the busy mode:
// BusyParam + "=MiB" (see BusyCmdline).
const BusyParam = "vigil.busy"

// ErrUnavailable is wrapped by Ensure's error when the image cannot be built
// here for want of an input rather than because of a bug: no network to the
// Debian mirror, not root for apt-get install, no builder script.
var ErrUnavailable = errors.New("guest image unavailable")

// Paths locates a built guest image.
type Paths struct {
	Dir     string
	Kernel  string // OUTDIR/vmlinux (PVH ELF) if present, else OUTDIR/vmlinuz
	Initrd  string // OUTDIR/initramfs.cpio.gz
	Cmdline string // kernel command line for -append, e.g. "console=ttyS0 panic=-1 quiet ..."
	PVH     bool   // Kernel is the uncompressed PVH vmlinux
}

// BusyCmdline is p.Cmdline with the busy mode on: the guest keeps
// dirtying mib MiB of its memory from its boot on (see the package doc).
func (p Paths) BusyCmdline(mib int) string {
	return p.Cmdline + " " + BusyParam + "=" + strconv.Itoa(mib)
}

// DefaultDir is the cache dir for the image: $VIGIL_CACHE_DIR, else
// $XDG_CACHE_HOME/vigil/guest, else ~/.cache/vigil/guest (os.TempDir based
// when there is no home either).
func DefaultDir() string {
	if d := os.Getenv("VIGIL_CACHE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vigil", "guest")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "vigil", "guest")
	}
	return filepath.Join(os.TempDir(), "vigil-cache", "guest")
}

// Ensure returns the guest image in dir (DefaultDir when empty), first
// running scripts/guest-image.sh, which returns at once when dir is already
// complete and otherwise builds it (downloading the kernel package with
// apt-get: tens of MB, about ten seconds). When the script cannot be found,
// an image already complete in dir is used as is.
//
// The script is found through $VIGIL_GUEST_IMAGE_SCRIPT, else by walking up
// from this source file, the working directory and the executable.
func Ensure(ctx context.Context, dir string) (Paths, error) {
	if dir == "" {
		dir = DefaultDir()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Paths{}, err
	}
	script, err := findScript()
	if err != nil {
		if p, lerr := Lookup(dir); lerr == nil {
			return p, nil
		}
		return Paths{}, fmt.Errorf("guest image in %s: %w (%w)", dir, err, ErrUnavailable)
	}
	out, err := run(ctx, script, dir)
	if err != nil {
		return Paths{}, err
	}
	p := Paths{Dir: dir}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "kernel":
			p.Kernel = v
		case "initrd":
			p.Initrd = v
		case "cmdline":
			p.Cmdline = v
		}
	}
	if p.Kernel == "" || p.Initrd == "" || p.Cmdline == "" {
		return Paths{}, fmt.Errorf("guest image: %s %s printed no kernel=, initrd= and cmdline= lines: %q", script, dir, out)
	}
	p.PVH = filepath.Base(p.Kernel) == "vmlinux"
	return p, nil
}

// Lookup returns the image already complete in dir, without building.
func Lookup(dir string) (Paths, error) {
	stamp, err := os.ReadFile(filepath.Join(dir, "stamp"))
	if err != nil || !bytes.HasPrefix(stamp, []byte("vigil-guest-image ")) {
		return Paths{}, fmt.Errorf("no complete guest image in %s (run %s %s)", dir, ScriptPath, dir)
	}
	p := Paths{Dir: dir, Initrd: filepath.Join(dir, "initramfs.cpio.gz"), PVH: true}
	p.Kernel = filepath.Join(dir, "vmlinux")
	if _, err := os.Stat(p.Kernel); err != nil {
		p.Kernel, p.PVH = filepath.Join(dir, "vmlinuz"), false
	}
	for _, f := range []string{p.Kernel, p.Initrd} {
		if _, err := os.Stat(f); err != nil {
			return Paths{}, fmt.Errorf("incomplete guest image in %s: %w", dir, err)
		}
	}
	cl, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return Paths{}, fmt.Errorf("incomplete guest image in %s: %w", dir, err)
	}
	p.Cmdline = strings.TrimSpace(string(cl))
	return p, nil
}

// run runs the script in its own process group, so that a cancelled ctx
// also stops its apt-get; the script takes a lock per dir, so concurrent
// callers (parallel test packages) build once.
func run(ctx context.Context, script, dir string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "bash", script, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	msg := strings.TrimSpace(stderr.String())
	if i := strings.LastIndex(msg, "guest-image: "); i >= 0 {
		msg = msg[i:] // the script's last word says what failed
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("guest image: %s %s: %w", script, dir, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		return nil, fmt.Errorf("guest image: %s: %w", msg, ErrUnavailable)
	}
	return nil, fmt.Errorf("guest image: %s %s: %v: %s", script, dir, err, msg)
}

var (
	scriptOnce sync.Once
	scriptPath string
	scriptErr  error
)

func findScript() (string, error) {
	scriptOnce.Do(func() { scriptPath, scriptErr = locate() })
	return scriptPath, scriptErr
}

func locate() (string, error) {
	if s := os.Getenv("VIGIL_GUEST_IMAGE_SCRIPT"); s != "" {
		if _, err := os.Stat(s); err != nil {
			return "", fmt.Errorf("VIGIL_GUEST_IMAGE_SCRIPT: %w", err)
		}
		return s, nil
	}
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file)) // not under -trimpath
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, d := range starts {
		for {
			s := filepath.Join(d, filepath.FromSlash(ScriptPath))
			if _, err := os.Stat(s); err == nil {
				return s, nil
			}
			up := filepath.Dir(d)
			if up == d {
				break
			}
			d = up
		}
	}
	return "", fmt.Errorf("%s not found above %s (set VIGIL_GUEST_IMAGE_SCRIPT)", ScriptPath, strings.Join(starts, ", "))
}
