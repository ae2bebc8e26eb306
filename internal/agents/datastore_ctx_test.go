package agents

import (
	"context"
	"strings"
	"testing"
)

// vigil:vm's parameter check resolves datastores through the configuration
// being validated when the context carries it, else through the node's.
func TestValidateParamsWithDatastores(t *testing.T) {
	r := NewRegistry(Options{StateDir: t.TempDir(), Datastores: func(ds string) (string, bool) { return "/srv/ds1", ds == "ds1" }})
	pv, ok := mustGet(t, r, "vigil:vm").(ParamValidator)
	if !ok {
		t.Fatal("vigil:vm is not a ParamValidator")
	}
	params := map[string]string{"disk": "ds2:vm1.qcow2"}
	ctx := context.Background()
	if err := pv.ValidateParams(ctx, params); err == nil || !strings.Contains(err.Error(), `datastore "ds2" is not known`) {
		t.Fatalf("ds2 unknown to the node: %v", err)
	}
	next := WithDatastores(ctx, func(ds string) (string, bool) { return "/srv/ds2", ds == "ds2" })
	if err := pv.ValidateParams(next, params); err != nil {
		t.Fatalf("ds2 declared by the change: %v", err)
	}
	if err := pv.ValidateParams(next, map[string]string{"disk": "ds1:vm1.qcow2"}); err == nil {
		t.Fatal("ds1, which the change removes, still accepted")
	}
}
