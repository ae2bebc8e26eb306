package agents

import "context"

type datastoresKey struct{}

// WithDatastores returns a context under which vigil:vm's ValidateParams
// resolves datastores through ds instead of the node's live configuration.
// A configuration change is validated against the datastores it declares:
// `vigil config apply` may add a datastore and the VMs on it in one
// document, and the VMs must not be refused for a datastore that only the
// same change creates.
func WithDatastores(ctx context.Context, ds DatastoreLookup) context.Context {
	return context.WithValue(ctx, datastoresKey{}, ds)
}

// datastoresFor returns the lookup WithDatastores put in ctx, else def.
func datastoresFor(ctx context.Context, def DatastoreLookup) DatastoreLookup {
	if ds, ok := ctx.Value(datastoresKey{}).(DatastoreLookup); ok && ds != nil {
		return ds
	}
	return def
}
