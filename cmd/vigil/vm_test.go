package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
)

func TestImagesOf(t *testing.T) {
	imgs, err := imagesOf([]string{"ds1:vm1.qcow2", "/var/lib/local.raw", "ds2:data/d:raw", "ds1:b.img"})
	if err != nil {
		t.Fatal(err)
	}
	want := []vmDiskImage{{"ds1", "vm1.qcow2", "qcow2"}, {"ds2", "data/d", "raw"}, {"ds1", "b.img", "raw"}}
	if len(imgs) != len(want) {
		t.Fatalf("%+v", imgs)
	}
	for i := range want {
		if imgs[i] != want[i] {
			t.Errorf("%d: %+v, want %+v", i, imgs[i], want[i])
		}
	}
	for _, bad := range []string{"vm1.qcow2", "ds1:", "ds1:disk"} {
		if _, err := imagesOf([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestVMCreateResource(t *testing.T) {
	v := vmCreate{name: "web1", cpus: 2, memory: "1G", disks: []string{"ds1:web1.qcow2", "ds1:data.qcow2"}, nics: []string{"user"}}
	r := v.resource()
	if r.Agent != "vigil:vm" || r.Params["disk"] != "ds1:web1.qcow2,ds1:data.qcow2" || r.Params["cpus"] != "2" ||
		r.Params["memory"] != "1G" || r.Params["nic"] != "user" || r.Meta["allow-migrate"] != "true" {
		t.Errorf("%+v", r)
	}
	if _, ok := r.Params["kernel"]; ok {
		t.Error("empty kernel set")
	}
}

// Bad input is refused before any request.
func TestVMCreateBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"vm", "create", "bad name", "--disk", "ds1:a.qcow2", "--api", "127.0.0.1:1", "--key-file", "/nonexistent"},
		{"vm", "create", "vm1", "--api", "127.0.0.1:1", "--key-file", "/nonexistent"},
		{"vm", "create", "vm1", "--disk", "ds1:a", "--api", "127.0.0.1:1", "--key-file", "/nonexistent"},
	} {
		_, _, err := run(t, args...)
		if err == nil || strings.Contains(err.Error(), "nonexistent") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

func TestWriteDatastores(t *testing.T) {
	var b bytes.Buffer
	writeDatastores(&b, []api.Datastore{{Name: "ds1", Path: "/srv/ds1", Health: []api.DatastoreNodeHealth{
		{Node: "n1", OK: true, Latency: 1234 * time.Microsecond},
		{Node: "n2", Error: "not mounted"},
	}}})
	out := b.String()
	for _, want := range []string{"DATASTORE", "/srv/ds1", "n1 ok 1.23ms", "n2 FAILED: not mounted"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
