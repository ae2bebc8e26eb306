package store

import (
	"encoding/json"
	"errors"
	"fmt"
)

// errFormat marks an entry written in a newer format than this binary knows.
// Applying it is impossible without diverging, so it is fatal to the node.
var errFormat = errors.New("store: unknown format version")

// envelope is the encoding of one proposed command in the raft log: the data
// of an EntryNormal, or the Context of an EntryConfChangeV2.
//
// From and ID route the result back: From is the raft ID of the proposing
// node and ID the proposer's wait id. Every node applies the entry; only the
// node whose ID is From reports the result, to the waiter ID.
type envelope struct {
	V    int    `json:"v"`
	From uint64 `json:"from,omitempty"`
	ID   uint64 `json:"id,omitempty"`
	Op   string `json:"op"`

	Key     string   `json:"key,omitempty"`
	Value   []byte   `json:"value,omitempty"`
	Ops     []wireOp `json:"ops,omitempty"`
	IfEpoch uint64   `json:"if_epoch,omitempty"`
	If      []Cmp    `json:"if,omitempty"`
	Member  *Member  `json:"member,omitempty"`
	Name    string   `json:"name,omitempty"`
}

type wireOp struct {
	Key    string `json:"key"`
	Value  []byte `json:"value,omitempty"`
	Delete bool   `json:"delete,omitempty"`
}

const (
	opPut        = "put"
	opDelete     = "delete"
	opTxn        = "txn"
	opAddNode    = "add_node"
	opRemoveNode = "remove_node"
	opPromote    = "promote"
)

func encodeCommand(from, id uint64, cmd Command) ([]byte, error) {
	e := envelope{V: FormatVersion, From: from, ID: id}
	switch c := cmd.(type) {
	case Put:
		e.Op, e.Key, e.Value = opPut, c.Key, c.Value
	case Delete:
		e.Op, e.Key = opDelete, c.Key
	case Txn:
		e.Op, e.IfEpoch, e.If = opTxn, c.IfEpoch, c.If
		for _, op := range c.Ops {
			e.Ops = append(e.Ops, wireOp(op))
		}
	case AddNode:
		e.Op, e.Member = opAddNode, &c.Member
	case RemoveNode:
		e.Op, e.Name = opRemoveNode, c.Name
	case Promote:
		e.Op, e.Name = opPromote, c.Name
	default:
		return nil, fmt.Errorf("%w: cannot encode %T", ErrBadCommand, cmd)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("store: encode command: %w", err)
	}
	return b, nil
}

// decodeCommand decodes an envelope. A malformed envelope gives a nil command
// and an ErrBadCommand error (deterministic: every node rejects it alike); a
// newer format gives errFormat.
func decodeCommand(b []byte) (from, id uint64, cmd Command, err error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return 0, 0, nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if e.V > FormatVersion {
		return e.From, e.ID, nil, fmt.Errorf("%w: command has v%d, this binary knows up to v%d", errFormat, e.V, FormatVersion)
	}
	switch e.Op {
	case opPut:
		cmd = Put{Key: e.Key, Value: e.Value}
	case opDelete:
		cmd = Delete{Key: e.Key}
	case opTxn:
		t := Txn{IfEpoch: e.IfEpoch, If: e.If}
		for _, op := range e.Ops {
			t.Ops = append(t.Ops, Op(op))
		}
		cmd = t
	case opAddNode:
		if e.Member == nil {
			return e.From, e.ID, nil, fmt.Errorf("%w: add_node without member", ErrBadCommand)
		}
		cmd = AddNode{Member: *e.Member}
	case opRemoveNode:
		cmd = RemoveNode{Name: e.Name}
	case opPromote:
		cmd = Promote{Name: e.Name}
	default:
		return e.From, e.ID, nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, e.Op)
	}
	return e.From, e.ID, cmd, nil
}
