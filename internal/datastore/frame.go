package datastore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// Errors shared by every record kind.
var (
	// ErrCorrupt means a file is not a well-formed record of its kind: a
	// torn or partial write, garbage, or a file of another kind. Callers
	// must never read it as "free": see Acquire.
	ErrCorrupt = errors.New("datastore: corrupt record")
	// ErrVersion means a record was written in a newer format than this
	// release reads. A node of release N+1 must keep writing the old format
	// until every node reads the new one.
	ErrVersion = errors.New("datastore: record in a newer format")
	// ErrName means a node, resource or datastore name cannot be used as a
	// file name.
	ErrName = errors.New("datastore: invalid name")
)

// Every file Vigil writes on a datastore is one frame:
//
//	vigil <kind> <version> <crc32c of body, 8 hex digits> <body length>\n<body>
//
// The body is JSON. The header is plain text so that an operator can `cat`
// a lease and see who holds it; the checksum and the length catch a torn or
// partial write (on a filesystem where rename is not atomic, or a
// half-synced NFS page), so that a damaged file is reported as damaged and
// never decoded as a plausible record. Unknown JSON fields are ignored: a
// newer release may add optional fields within one version.
const framePrefix = "vigil "

// maxFrame bounds what decodeFrame accepts: records are small, and a huge
// file is not one of ours.
const maxFrame = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeFrame marshals v as the body of a frame of kind and version.
func encodeFrame(kind string, version int, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s record: %w", kind, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%s %d %08x %d\n", framePrefix, kind, version, crc32.Checksum(body, castagnoli), len(body))
	b.Write(body)
	return b.Bytes(), nil
}

// decodeFrame checks a frame of kind written in a version at most maxVersion
// and unmarshals its body into v. It returns the frame's version.
func decodeFrame(data []byte, kind string, maxVersion int, v any) (int, error) {
	if len(data) > maxFrame {
		return 0, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(data))
	}
	header, body, ok := bytes.Cut(data, []byte{'\n'})
	if !ok || !bytes.HasPrefix(header, []byte(framePrefix)) {
		return 0, fmt.Errorf("%w: no %q header", ErrCorrupt, strings.TrimSpace(framePrefix))
	}
	f := strings.Fields(string(header[len(framePrefix):]))
	if len(f) != 4 {
		return 0, fmt.Errorf("%w: malformed header", ErrCorrupt)
	}
	if f[0] != kind {
		return 0, fmt.Errorf("%w: a %q record, want %q", ErrCorrupt, f[0], kind)
	}
	version, err := strconv.Atoi(f[1])
	if err != nil || version < 1 {
		return 0, fmt.Errorf("%w: bad version %q", ErrCorrupt, f[1])
	}
	sum, err := strconv.ParseUint(f[2], 16, 32)
	if err != nil || len(f[2]) != 8 {
		return 0, fmt.Errorf("%w: bad checksum field %q", ErrCorrupt, f[2])
	}
	n, err := strconv.Atoi(f[3])
	if err != nil || n != len(body) {
		return 0, fmt.Errorf("%w: body of %d bytes, header says %s (torn write?)", ErrCorrupt, len(body), f[3])
	}
	if crc32.Checksum(body, castagnoli) != uint32(sum) {
		return 0, fmt.Errorf("%w: checksum mismatch (torn write?)", ErrCorrupt)
	}
	// The checksum is checked before the version: a damaged version field
	// must read as damage, not as a newer format.
	if version > maxVersion {
		return version, fmt.Errorf("%w: %s record version %d, this release reads up to %d", ErrVersion, kind, version, maxVersion)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return version, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return version, nil
}

// checkName accepts names that are safe as one path element on any
// filesystem Vigil supports. Names starting with a dot are reserved for
// temporary files, so that a reader listing a folder can skip them.
func checkName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty %s name", ErrName, what)
	case len(name) > 200:
		return fmt.Errorf("%w: %s name of %d bytes, at most 200", ErrName, what, len(name))
	case name[0] == '.':
		return fmt.Errorf("%w: %s name %q starts with a dot", ErrName, what, name)
	case strings.ContainsAny(name, "/\\\x00\n"):
		return fmt.Errorf("%w: %s name %q contains a slash, backslash, NUL or newline", ErrName, what, name)
	}
	return nil
}
