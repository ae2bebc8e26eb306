package pki

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

// hkdfTwin is a plain RFC 5869 HKDF-SHA256 (empty salt), the "dumb twin" of
// Derive.
func hkdfTwin(secret []byte, info string, n int) []byte {
	ext := hmac.New(sha256.New, make([]byte, sha256.Size))
	ext.Write(secret)
	prk := ext.Sum(nil)
	var out, prev []byte
	for i := byte(1); len(out) < n; i++ {
		m := hmac.New(sha256.New, prk)
		m.Write(prev)
		m.Write([]byte(info))
		m.Write([]byte{i})
		prev = m.Sum(nil)
		out = append(out, prev...)
	}
	return out[:n]
}

// TestDeriveStable pins the derived secrets: every node of a cluster, of
// every release, must derive the same ones from the same key.
func TestDeriveStable(t *testing.T) {
	key := testKey(1)
	tests := []struct {
		purpose string
		want    string
	}{
		{PurposeHeartbeat, "68f0da4f25b7157b4a082135ce5f34c90a4b61484576e1f1f25863e9c17ca6fc"},
		{PurposeCA, "1ad848a71829484062ad3f29dedad77d3334f00d100f3a5313f85bed01eebf28"},
		{PurposeAPIToken, "ecff95e4e91339dece35d2e15547286795edf273f62864998bae61a6070863bc"},
	}
	for i, tt := range tests {
		got := Derive(key, tt.purpose, 32)
		if h := hex.EncodeToString(got); h != tt.want {
			t.Errorf("%d: Derive(%q) = %s, want %s", i, tt.purpose, h, tt.want)
		}
		if twin := hkdfTwin(key, tt.purpose, 32); !bytes.Equal(got, twin) {
			t.Errorf("%d: Derive(%q) = %x, RFC 5869 twin says %x", i, tt.purpose, got, twin)
		}
		// A longer output starts with the shorter one (HKDF-Expand), so n
		// is not a hidden input.
		if long := Derive(key, tt.purpose, 64); !bytes.Equal(long[:32], got) {
			t.Errorf("%d: Derive(%q, 64) does not extend Derive(%q, 32)", i, tt.purpose, tt.purpose)
		}
	}
	if got := HeartbeatKey(key); !bytes.Equal(got, Derive(key, PurposeHeartbeat, 32)) {
		t.Errorf("HeartbeatKey = %x, want the %q derivation", got, PurposeHeartbeat)
	}
	if got, want := APIToken(key), "vgl1.7P-V5OkTOd7ONdLhVUcoZ5Xt8nP2KGSZi65hpgcIY7w"; got != want {
		t.Errorf("APIToken = %q, want %q", got, want)
	}
	if got, want := ClusterID("prod", key), uint64(0x8462d92c20275b0b); got != want {
		t.Errorf("ClusterID = %#x, want %#x", got, want)
	}
}

func TestDeriveSeparation(t *testing.T) {
	keys := [][]byte{testKey(1), testKey(2)}
	purposes := []string{PurposeHeartbeat, PurposeCA, PurposeAPIToken, PurposeClusterID, "vigil heartbeat mac v2"}
	seen := make(map[string]string)
	for _, k := range keys {
		for _, p := range purposes {
			what := hex.EncodeToString(k[:1]) + "/" + p
			out := string(Derive(k, p, 32))
			if prev, dup := seen[out]; dup {
				t.Errorf("%s derives the same bytes as %s", what, prev)
			}
			seen[out] = what
			if bytes.Equal([]byte(out), k) {
				t.Errorf("%s derives the key itself", what)
			}
		}
	}
	if APIToken(keys[0]) == APIToken(keys[1]) {
		t.Error("two keys give the same API token")
	}
	if ClusterID("a", keys[0]) == ClusterID("b", keys[0]) {
		t.Error("two cluster names give the same ClusterID")
	}
	if ClusterID("a", keys[0]) == ClusterID("a", keys[1]) {
		t.Error("two keys give the same ClusterID")
	}
}

func TestCheckToken(t *testing.T) {
	key, other := testKey(1), testKey(2)
	good := APIToken(key)
	tests := []struct {
		presented string
		want      bool
	}{
		{good, true},
		{"", false},
		{APIToken(other), false},
		{good[:len(good)-1], false},
		{good + "x", false},
		{strings.TrimPrefix(good, "vgl1."), false},
		{strings.ToUpper(good), false},
	}
	for i, tt := range tests {
		if got := CheckToken(key, tt.presented); got != tt.want {
			t.Errorf("%d: CheckToken(%q) = %v, want %v", i, tt.presented, got, tt.want)
		}
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != KeySize {
		t.Fatalf("GenerateKey: %d bytes, want %d", len(key), KeySize)
	}
	path := filepath.Join(t.TempDir(), "cluster.key")
	if err := WriteKey(path, key); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	got, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, key) {
		t.Errorf("LoadKey = %x, want %x", got, key)
	}
	if err := WriteKey(path, testKey(9)); err == nil {
		t.Error("WriteKey replaced an existing key file")
	}
	if got, _ := LoadKey(path); !bytes.Equal(got, key) {
		t.Error("failed WriteKey changed the key file")
	}
	if err := WriteKey(filepath.Join(t.TempDir(), "short.key"), key[:16]); !errors.Is(err, ErrKeySize) {
		t.Errorf("WriteKey(16 bytes) = %v, want ErrKeySize", err)
	}
}

func TestLoadKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	good := base64.StdEncoding.EncodeToString(testKey(7)) + "\n"
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		wantErr error  // errors.Is target, if any
		wantMsg string // substring of the message
	}{
		{"group-readable", good, 0o640, ErrKeyFileMode, "chmod 600"},
		{"world-readable", good, 0o604, ErrKeyFileMode, "0604"},
		{"group-writable", good, 0o620, ErrKeyFileMode, "0620"},
		{"short", base64.StdEncoding.EncodeToString(testKey(7)[:31]), 0o600, ErrKeySize, "31 bytes"},
		{"long", base64.StdEncoding.EncodeToString(append(testKey(7), 0)), 0o600, ErrKeySize, "33 bytes"},
		{"not-base64", "this is not base64!", 0o600, nil, "not base64"},
		{"empty", "", 0o600, ErrKeySize, "0 bytes"},
		{"huge", strings.Repeat("A", 10000), 0o600, nil, "too large"},
	}
	for i, tt := range tests {
		path := filepath.Join(dir, tt.name)
		if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tt.mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKey(path)
		if err == nil {
			t.Errorf("%d (%s): LoadKey accepted it", i, tt.name)
			continue
		}
		if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
			t.Errorf("%d (%s): err = %v, want %v", i, tt.name, err, tt.wantErr)
		}
		if !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("%d (%s): err = %q, want it to mention %q", i, tt.name, err, tt.wantMsg)
		}
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadKey(missing) = %v, want os.ErrNotExist", err)
	}
	// White space around the text is fine.
	path := filepath.Join(dir, "spaced")
	if err := os.WriteFile(path, []byte("  \n"+good+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadKey(path); err != nil || !bytes.Equal(got, testKey(7)) {
		t.Errorf("LoadKey(spaced) = %x, %v", got, err)
	}
}
