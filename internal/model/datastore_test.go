package model

import "testing"

func TestDatastoreValidate(t *testing.T) {
	cases := []struct {
		d  Datastore
		ok bool
	}{
		{Datastore{"ds1", "/srv/ds1"}, true},
		{Datastore{"", "/srv/ds1"}, false},
		{Datastore{"ds/1", "/srv/ds1"}, false},
		{Datastore{"ds1", "srv/ds1"}, false},
		{Datastore{"ds1", "/srv/ds1/"}, false},
		{Datastore{"ds1", "/srv/../ds1"}, false},
		{Datastore{"ds1", "/"}, false},
		{Datastore{"ds1", "/srv/a,b"}, false},
	}
	for i, tc := range cases {
		if err := tc.d.Validate(); (err == nil) != tc.ok {
			t.Errorf("%d: %+v: %v", i, tc.d, err)
		}
	}
}
