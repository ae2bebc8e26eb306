package guestimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeKernelDeb builds, in dir, a .deb shaped like linux-image-*-cloud-amd64
// (boot/vmlinuz-KVER and the modules the script copies) whose "kernel" is a
// few bytes: enough for the script to build an image offline, not to boot.
func fakeKernelDeb(t *testing.T, dir string) string {
	t.Helper()
	const kver = "0.0.0-vigil-test-cloud-amd64"
	root := filepath.Join(dir, "debroot")
	files := map[string]string{
		"DEBIAN/control": "Package: linux-image-" + kver + "\nVersion: 0.0.0-1\nArchitecture: amd64\n" +
			"Maintainer: vigil tests <tests@vigil.invalid>\nDescription: fake kernel for the guest image script's tests\n",
		"boot/vmlinuz-" + kver: "not a kernel\n",
	}
	for _, m := range []string{"drivers/acpi/button", "drivers/input/evdev"} {
		files["lib/modules/"+kver+"/kernel/"+m+".ko"] = "not a module\n"
	}
	for name, body := range files {
		f := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(dir, "fake-kernel.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v: %s", err, out)
	}
	return deb
}

// The cache is keyed by the script: a second run with the same script
// returns the image as it is, but any edit of the script, and an image of
// an older version, make the next run build the image again. (CI and
// developers keep the image in a cache dir across runs; an image built by
// an older script, with an older init, must not survive a change of it.)
func TestScriptEditRebuilds(t *testing.T) {
	for _, c := range []string{"bash", "dpkg-deb", "gzip", "flock", "sha256sum"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed", c)
		}
	}
	script, err := findScript()
	if err != nil {
		t.Skip(err)
	}
	src, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	deb := fakeKernelDeb(t, dir)
	out := filepath.Join(dir, "image")
	build := func(script string) (built bool, stamp string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", script, out)
		cmd.Env = append(os.Environ(), "VIGIL_GUEST_KERNEL_DEB="+deb)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 3 {
			t.Skipf("the script cannot run here: %s", strings.TrimSpace(stderr.String()))
		}
		if err != nil {
			t.Fatalf("%s: %v: %s", script, err, stderr.String())
		}
		if !strings.Contains(string(stdout), "initrd="+filepath.Join(out, "initramfs.cpio.gz")) {
			t.Fatalf("%s printed %q", script, stdout)
		}
		st, err := os.ReadFile(filepath.Join(out, "stamp"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(stderr.String(), "guest-image: built in "), string(st)
	}
	firstLine := func(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

	a := filepath.Join(dir, "a", "guest-image.sh")
	write := func(path string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(a, src)
	built, stamp := build(a)
	if !built {
		t.Fatal("first run: nothing built")
	}
	sum := sha256.Sum256(src)
	if want := "script=" + hex.EncodeToString(sum[:])[:16]; !strings.Contains(firstLine(stamp), want) {
		t.Errorf("stamp %q does not carry %s", firstLine(stamp), want)
	}
	if p, err := Lookup(out); err != nil || p.PVH || filepath.Base(p.Kernel) != "vmlinuz" {
		t.Errorf("Lookup of the fake image: %+v, %v; want the bzImage, not PVH", p, err)
	}

	// The same script again: complete, nothing rebuilt.
	if built, again := build(a); built || again != stamp {
		t.Errorf("second run with the same script rebuilt (stamp %q → %q)", firstLine(stamp), firstLine(again))
	}

	// An edited script (one comment line more) rebuilds.
	b := filepath.Join(dir, "b", "guest-image.sh")
	write(b, append(append([]byte{}, src...), "# an edit\n"...))
	built, edited := build(b)
	if !built || firstLine(edited) == firstLine(stamp) {
		t.Errorf("a run with an edited script did not rebuild: built %v, stamp %q → %q", built, firstLine(stamp), firstLine(edited))
	}

	// An image stamped by an older version of the script rebuilds.
	old := "vigil-guest-image v2\n" + strings.SplitN(edited, "\n", 2)[1]
	if err := os.WriteFile(filepath.Join(out, "stamp"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if built, _ := build(b); !built {
		t.Error("an image stamped v2 was taken as complete")
	}

	// The image's init knows the busy mode.
	x := filepath.Join(dir, "initramfs")
	if err := os.MkdirAll(x, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "gzip -dc \"$1\" | busybox cpio -id init", "sh", filepath.Join(out, "initramfs.cpio.gz"))
	cmd.Dir = x
	if outp, err := cmd.CombinedOutput(); err != nil {
		t.Logf("cannot unpack /init (%v: %s); not checked", err, outp)
		return
	}
	initSrc, err := os.ReadFile(filepath.Join(x, "init"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(initSrc, []byte(BusyParam+"=*)")) {
		t.Errorf("/init does not parse %s=:\n%s", BusyParam, initSrc)
	}
}
