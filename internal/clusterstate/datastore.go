package clusterstate

import (
	"strings"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// Datastore keys: the configuration of each datastore, and each node's
// latest checks of them (status: writing it does not move the epoch).
const (
	PrefixDatastores      = "config/datastores/"
	PrefixDatastoreHealth = "status/datastores/"
	// PrefixIsolation holds the DC's IsolationRecord of each node that
	// released resources on its datastore heartbeat.
	PrefixIsolation = "status/isolation/"
)

// IsolationKey is the key of node's isolation record.
func IsolationKey(node string) string { return PrefixIsolation + node }

// Isolations returns the isolation records by node; records that cannot
// be decoded are skipped.
func Isolations(s *store.State) map[string]model.IsolationRecord {
	out := map[string]model.IsolationRecord{}
	s.Range(PrefixIsolation, func(k string, it store.Item) bool {
		var r model.IsolationRecord
		if decode(k, it.Value, &r) == nil {
			out[strings.TrimPrefix(k, PrefixIsolation)] = r
		}
		return true
	})
	return out
}

// DatastoreKey is the configuration key of datastore name.
func DatastoreKey(name string) string { return PrefixDatastores + name }

// DatastoreHealthKey is the key of node's datastore checks.
func DatastoreHealthKey(node string) string { return PrefixDatastoreHealth + node }

// LoadDatastores returns the configured datastores, sorted by name.
func LoadDatastores(s *store.State) ([]model.Datastore, error) {
	var out []model.Datastore
	err := rangeDecode(s, PrefixDatastores, &out)
	return out, err
}

// DatastoreHealths returns every node's datastore checks by node; records
// that cannot be decoded are skipped (a newer writer's).
func DatastoreHealths(s *store.State) map[string]model.DatastoreHealth {
	out := map[string]model.DatastoreHealth{}
	s.Range(PrefixDatastoreHealth, func(k string, it store.Item) bool {
		var h model.DatastoreHealth
		if decode(k, it.Value, &h) == nil {
			out[strings.TrimPrefix(k, PrefixDatastoreHealth)] = h
		}
		return true
	})
	return out
}
