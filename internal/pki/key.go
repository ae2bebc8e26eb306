// Package pki derives every cluster credential from one secret, the cluster
// key: the heartbeat MAC key, the cluster CA (and through it the node
// certificates), the API token and the cluster ID.
//
// Derivation is HKDF-SHA256 (RFC 5869) with a purpose label per use, so that
// the outputs are independent: knowing the API token says nothing about the
// CA key. The labels carry a version ("v1") so that a later release can
// derive new credentials beside the old ones during a rolling upgrade.
package pki

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// KeySize is the length of the cluster key in bytes.
const KeySize = 32

// Purpose labels for Derive. NB: changing one changes the derived secret and
// splits a running cluster; add a new label (v2) instead.
const (
	PurposeHeartbeat = "vigil heartbeat mac v1"
	PurposeCA        = "vigil ca v1"
	PurposeAPIToken  = "vigil api token v1"
	PurposeClusterID = "vigil cluster id v1"
)

// tokenPrefix marks API tokens of this format (and lets a reader tell them
// from other secrets in a shell history).
const tokenPrefix = "vgl1."

// maxKeyFile caps how much of a key file LoadKey reads.
const maxKeyFile = 4096

var (
	// ErrKeyFileMode is returned by LoadKey for a key file that group or
	// others may read or write.
	ErrKeyFileMode = errors.New("pki: cluster key file is accessible by group or others")
	// ErrKeySize is returned for a key that is not KeySize bytes long.
	ErrKeySize = errors.New("pki: cluster key has the wrong length")
)

// GenerateKey returns a new random cluster key.
func GenerateKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("pki: generate cluster key: %w", err)
	}
	return key, nil
}

// LoadKey reads a cluster key written by WriteKey: base64 text, surrounding
// white space ignored. It refuses a file that group or others can access
// (mode & 077 != 0), because the key is every credential of the cluster.
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pki: load cluster key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pki: load cluster key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("pki: load cluster key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run `chmod 600 %s`", ErrKeyFileMode, path, perm, path)
	}
	text, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("pki: load cluster key %s: %w", path, err)
	}
	if len(text) > maxKeyFile {
		return nil, fmt.Errorf("pki: load cluster key %s: file too large for a key", path)
	}
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(text)))
	if err != nil {
		return nil, fmt.Errorf("pki: load cluster key %s: not base64: %w", path, err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: %s holds %d bytes, want %d", ErrKeySize, path, len(key), KeySize)
	}
	return key, nil
}

// WriteKey writes key to a new file at path as base64 text with mode 0600.
// It refuses to replace an existing file: overwriting a cluster key cuts a
// node off from its cluster. Remove the old file first if that is meant.
func WriteKey(path string, key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrKeySize, len(key), KeySize)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("pki: write cluster key: %w", err)
	}
	text := base64.StdEncoding.EncodeToString(key) + "\n"
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("pki: write cluster key %s: %w", path, err)
	}
	return nil
}

// Derive returns n bytes derived from key for purpose with HKDF-SHA256 (no
// salt; purpose is the HKDF info). Different purposes give independent
// outputs. It panics if n is out of HKDF's range (0 < n <= 8160): a
// programmer error.
func Derive(key []byte, purpose string, n int) []byte {
	out, err := hkdf.Key(sha256.New, key, nil, purpose, n)
	if err != nil {
		panic(fmt.Sprintf("pki: derive %q (%d bytes): %v", purpose, n, err))
	}
	return out
}

// HeartbeatKey returns the HMAC-SHA256 key for membership heartbeats.
func HeartbeatKey(key []byte) []byte {
	return Derive(key, PurposeHeartbeat, 32)
}

// APIToken returns the bearer token of the API: "vgl1." followed by 32
// derived bytes in unpadded base64url.
func APIToken(key []byte) string {
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(Derive(key, PurposeAPIToken, 32))
}

// CheckToken reports whether presented is the API token of key. The
// comparison takes time independent of the content (the length is public).
func CheckToken(key []byte, presented string) bool {
	return subtle.ConstantTimeCompare([]byte(APIToken(key)), []byte(presented)) == 1
}

// ClusterID returns a 64-bit identifier of the cluster (name and key), put on
// the wire so that nodes of different clusters sharing a network tell each
// other's packets apart before any MAC check. It is not a secret and proves
// nothing; the key-derived MAC and certificates do.
func ClusterID(name string, key []byte) uint64 {
	return binary.BigEndian.Uint64(Derive(key, PurposeClusterID+"\x00"+name, 8))
}
