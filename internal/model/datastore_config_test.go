package model

import (
	"slices"
	"strings"
	"testing"
)

func TestResourceDatastores(t *testing.T) {
	for i, tc := range []struct {
		r    Resource
		want []string
	}{
		{Resource{Agent: AgentVM, Params: map[string]string{"disk": "ds2:a.qcow2, ds1:b.img:raw,/abs/c.raw,ds2:d.qcow2"}}, []string{"ds1", "ds2"}},
		{Resource{Agent: AgentVM, Params: map[string]string{"disk": "/srv/a.raw", "kernel": "boot:vmlinux", "initrd": "boot2:initrd"}}, []string{"boot", "boot2"}},
		{Resource{Agent: AgentVM, Params: map[string]string{"disk": "/ds1:x.qcow2,:nods.qcow2,bare.qcow2"}}, nil},
		{Resource{Agent: AgentVM}, nil},
		{Resource{Agent: "vigil:process", Params: map[string]string{"disk": "ds1:x"}}, nil},
	} {
		if got := tc.r.Datastores(); !slices.Equal(got, tc.want) {
			t.Errorf("%d: %v, want %v", i, got, tc.want)
		}
	}
}

func TestConfigValidateDatastores(t *testing.T) {
	for i, tc := range []struct {
		ds   []Datastore
		want string // "" = valid
	}{
		{[]Datastore{{"ds1", "/srv/ds1"}, {"ds2", "/srv/ds2"}}, ""},
		{[]Datastore{{"ds1", "/srv/ds1"}, {"ds1", "/srv/ds2"}}, "datastore ds1: given twice"},
		{[]Datastore{{"ds1", "/srv/ds1"}, {"ds2", "/srv/ds1"}}, "datastore ds2: path /srv/ds1 is datastore ds1 already"},
		{[]Datastore{{"ds 1", "/srv/ds1"}}, `datastore id "ds 1"`},
		{[]Datastore{{"ds1", "srv"}}, "not absolute"},
	} {
		c := Config{Datastores: tc.ds}
		err := c.Validate(nil)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%d: %v, want %q", i, err, tc.want)
		}
	}
}
