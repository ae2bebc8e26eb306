package qemu

import (
	"slices"
	"strings"
	"testing"
)

func TestArgsFull(t *testing.T) {
	spec := Spec{
		Name: "vm1", CPUs: 2, MemoryMiB: 512, Machine: "q35", Accel: "kvm",
		Disks: []Disk{
			{Path: "/var/lib/vigil/vm1.qcow2", Format: FormatQcow2},
			{Path: "/dev/vg0/data", Format: FormatRaw, ReadOnly: true},
		},
		NICs: []NIC{
			{Mode: NICBridge, Bridge: "br0", MAC: "52:54:00:AA:BB:01"},
			{Mode: NICNone},
			{Mode: NICTap, Tap: "tap-vm1"},
			{Mode: NICUser},
		},
		Kernel: "/boot/vmlinuz", Initrd: "/boot/initrd", Append: "console=ttyS0 root=/dev/vda",
		ExtraArgs: []string{"-device", "pvpanic"},
	}
	got, err := Args(spec, NewPaths("/run/vigil/vm1"), IncomingDefer)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-name", "guest=vm1",
		"-machine", "q35",
		"-accel", "kvm",
		"-smp", "2",
		"-m", "512",
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-msg", "timestamp=on",
		"-chardev", "socket,id=qmp,path=/run/vigil/vm1/qmp.sock,server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=ser0,path=/run/vigil/vm1/console.sock,server=on,wait=off,logfile=/run/vigil/vm1/console.log,logappend=on",
		"-serial", "chardev:ser0",
		"-pidfile", "/run/vigil/vm1/qemu.pid",
		"-blockdev", "driver=file,node-name=file0,filename=/var/lib/vigil/vm1.qcow2",
		"-blockdev", "driver=qcow2,node-name=disk0,file=file0",
		"-device", "virtio-blk-pci,id=virtio-disk0,drive=disk0",
		"-blockdev", "driver=host_device,node-name=file1,filename=/dev/vg0/data,read-only=on",
		"-blockdev", "driver=raw,node-name=disk1,file=file1,read-only=on",
		"-device", "virtio-blk-pci,id=virtio-disk1,drive=disk1",
		"-netdev", "bridge,id=net0,br=br0",
		"-device", "virtio-net-pci,id=nic0,netdev=net0,mac=52:54:00:aa:bb:01",
		"-netdev", "tap,id=net2,ifname=tap-vm1,script=no,downscript=no",
		"-device", "virtio-net-pci,id=nic2,netdev=net2",
		"-netdev", "user,id=net3",
		"-device", "virtio-net-pci,id=nic3,netdev=net3",
		"-kernel", "/boot/vmlinuz",
		"-initrd", "/boot/initrd",
		"-append", "console=ttyS0 root=/dev/vda",
		"-incoming", "defer",
		"-device", "pvpanic",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Args:\ngot  %q\nwant %q", got, want)
	}
}

// TestArgs checks that command lines hold (or lack) some sequences of
// adjacent arguments.
func TestArgs(t *testing.T) {
	base := Spec{Name: "t", MemoryMiB: 16}
	paths := NewPaths("/run/v")
	tests := []struct {
		name     string
		spec     Spec
		incoming string
		has      [][]string
		lacks    []string
	}{
		{
			name: "defaults",
			spec: base,
			has: [][]string{
				{"-machine", "q35"},
				{"-accel", "kvm", "-accel", "tcg"}, // auto, unresolved: QEMU falls back
				{"-smp", "1"},
			},
			lacks: []string{"-incoming", "-device", "-kernel", "-daemonize"},
		},
		{
			name: "machine none takes disks as block nodes only",
			spec: Spec{Name: "t", MemoryMiB: 16, Machine: MachineNone, Accel: AccelTCG,
				Disks: []Disk{{Path: "/d.img", Format: FormatRaw}}},
			has: [][]string{
				{"-machine", "none", "-accel", "tcg"},
				{"-blockdev", "driver=file,node-name=file0,filename=/d.img", "-blockdev", "driver=raw,node-name=disk0,file=file0"},
			},
			lacks: []string{"-device"},
		},
		{
			name:     "incoming uri",
			spec:     base,
			incoming: "tcp:127.0.0.1:4444",
			has:      [][]string{{"-incoming", "tcp:127.0.0.1:4444"}},
		},
		{
			name: "commas are doubled in option values",
			spec: Spec{Name: "t", MemoryMiB: 16, Disks: []Disk{{Path: "/a,b/d.raw", Format: FormatRaw}}},
			has: [][]string{
				{"-blockdev", "driver=file,node-name=file0,filename=/a,,b/d.raw"},
			},
		},
		{
			name: "pc",
			spec: Spec{Name: "t", MemoryMiB: 16, Machine: "pc", CPUs: 4},
			has:  [][]string{{"-machine", "pc"}, {"-smp", "4"}},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Args(tt.spec, paths, tt.incoming)
			if err != nil {
				t.Fatalf("%d: %v", i, err)
			}
			for _, seq := range tt.has {
				if !containsSeq(got, seq) {
					t.Errorf("%d: %q lacks %q", i, got, seq)
				}
			}
			for _, a := range tt.lacks {
				if slices.Contains(got, a) {
					t.Errorf("%d: %q has %q", i, got, a)
				}
			}
		})
	}

	t.Run("comma in run dir", func(t *testing.T) {
		got, err := Args(base, NewPaths("/run/a,b"), "")
		if err != nil {
			t.Fatal(err)
		}
		if !containsSeq(got, []string{"-chardev", "socket,id=qmp,path=/run/a,,b/qmp.sock,server=on,wait=off"}) ||
			!containsSeq(got, []string{"-pidfile", "/run/a,b/qemu.pid"}) {
			t.Errorf("%q", got)
		}
	})
}

func containsSeq(args, seq []string) bool {
	for i := range args {
		if i+len(seq) <= len(args) && slices.Equal(args[i:i+len(seq)], seq) {
			return true
		}
	}
	return false
}

func TestArgsRejects(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	tests := []struct {
		name  string
		spec  Spec
		dir   string
		wants []string // substrings of the error
	}{
		{"no name", Spec{MemoryMiB: 16}, "/r", []string{`name ""`}},
		{"bad name", Spec{Name: "a b", MemoryMiB: 16}, "/r", []string{`name "a b"`}},
		{"no memory", Spec{Name: "x"}, "/r", []string{"memory 0 MiB"}},
		{"negative cpus", Spec{Name: "x", MemoryMiB: 1, CPUs: -1}, "/r", []string{"cpus -1"}},
		{"machine none smp", Spec{Name: "x", MemoryMiB: 1, Machine: "none", CPUs: 2}, "/r", []string{"machine none: has 1 CPU"}},
		{"bad machine", Spec{Name: "x", MemoryMiB: 1, Machine: "q35,accel=kvm"}, "/r", []string{"machine"}},
		{"bad accel", Spec{Name: "x", MemoryMiB: 1, Accel: "hvf"}, "/r", []string{`accel "hvf"`}},
		{"relative disk", Spec{Name: "x", MemoryMiB: 1, Disks: []Disk{{Path: "d.img", Format: FormatRaw}}}, "/r",
			[]string{`disk 0: path "d.img" is not absolute`}},
		{"no format", Spec{Name: "x", MemoryMiB: 1, Disks: []Disk{{Path: "/d.img"}}}, "/r",
			[]string{`disk 0: format ""`}},
		{"bridge without name", Spec{Name: "x", MemoryMiB: 1, NICs: []NIC{{Mode: NICBridge}}}, "/r",
			[]string{`nic 0: bridge ""`}},
		{"bad mode", Spec{Name: "x", MemoryMiB: 1, NICs: []NIC{{Mode: "vde"}}}, "/r",
			[]string{`nic 0: mode "vde"`}},
		{"bad mac", Spec{Name: "x", MemoryMiB: 1, NICs: []NIC{{Mode: NICUser, MAC: "52:54:00:zz:00:01"}}}, "/r",
			[]string{"nic 0: mac"}},
		{"multicast mac", Spec{Name: "x", MemoryMiB: 1, NICs: []NIC{{Mode: NICUser, MAC: "01:00:5e:00:00:01"}}}, "/r",
			[]string{"multicast"}},
		{"duplicate mac", Spec{Name: "x", MemoryMiB: 1, NICs: []NIC{
			{Mode: NICUser, MAC: "52:54:00:00:00:01"}, {Mode: NICUser, MAC: "52:54:00:00:00:01"}}}, "/r",
			[]string{"already used by nic 0"}},
		{"nic on machine none", Spec{Name: "x", MemoryMiB: 1, Machine: "none", NICs: []NIC{{Mode: NICUser}}}, "/r",
			[]string{"machine none has no bus"}},
		{"append without kernel", Spec{Name: "x", MemoryMiB: 1, Append: "quiet"}, "/r", []string{"need a kernel"}},
		{"daemonize", Spec{Name: "x", MemoryMiB: 1, ExtraArgs: []string{"-daemonize"}}, "/r", []string{"-daemonize is managed"}},
		{"several problems at once", Spec{Name: "", MemoryMiB: 0}, "/r", []string{`name ""`, "memory 0 MiB"}},
		{"socket path too long", Spec{Name: "x", MemoryMiB: 1}, long, []string{"more than unix sockets allow"}},
		{"relative run dir", Spec{Name: "x", MemoryMiB: 1}, "run", []string{"not absolute"}},
	}
	for i, tt := range tests {
		_, err := Args(tt.spec, NewPaths(tt.dir), "")
		if err == nil {
			t.Errorf("%d %s: no error", i, tt.name)
			continue
		}
		for _, w := range tt.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%d %s: error %q lacks %q", i, tt.name, err, w)
			}
		}
	}
}

func TestNewPaths(t *testing.T) {
	p := NewPaths("/run/vigil/vm1")
	want := Paths{
		Dir:        "/run/vigil/vm1",
		QMP:        "/run/vigil/vm1/qmp.sock",
		Console:    "/run/vigil/vm1/console.sock",
		ConsoleLog: "/run/vigil/vm1/console.log",
		PIDFile:    "/run/vigil/vm1/qemu.pid",
		Log:        "/run/vigil/vm1/qemu.log",
	}
	if p != want {
		t.Errorf("got %+v", p)
	}
}

func TestOwnsPIDFile(t *testing.T) {
	tests := []struct {
		args []string
		want bool
	}{
		{[]string{"/usr/bin/qemu-system-x86_64", "-name", "guest=a", "-pidfile", "/r/qemu.pid"}, true},
		{[]string{"/usr/bin/qemu-system-x86_64", "-pidfile", "/other/qemu.pid"}, false},
		{[]string{"/bin/sleep", "-pidfile", "/r/qemu.pid"}, false},
		{[]string{"/usr/bin/qemu-system-x86_64", "-pidfile"}, false},
		{nil, false},
	}
	for i, tt := range tests {
		if got := ownsPIDFile(tt.args, "/r/qemu.pid"); got != tt.want {
			t.Errorf("%d: ownsPIDFile(%q) = %v", i, tt.args, got)
		}
	}
}
