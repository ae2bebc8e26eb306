package sim

import (
	cryptorand "crypto/rand"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
)

// etcd raft draws its randomized election timeouts from crypto/rand.Reader
// (raft.go, globalRand). To replay a seed, the draws of a Cluster's raft
// nodes must come from the seed, and Clusters run in parallel must not
// share a stream. While any Cluster is open, crypto/rand.Reader is a
// dispatcher that serves each goroutine that registered a seeded reader
// from that reader, and every other goroutine from the real one. A Cluster
// registers the goroutine that creates it and must be driven from that
// goroutine only (raft's draws happen synchronously inside Core calls).

var (
	randMu    sync.Mutex
	randUsers int
	randOld   io.Reader
	randByG   = map[uint64]*pcgReader{}
)

// dispatchReader is crypto/rand.Reader while Clusters are open.
type dispatchReader struct{}

func (dispatchReader) Read(b []byte) (int, error) {
	id := goid()
	randMu.Lock()
	r, old := randByG[id], randOld
	randMu.Unlock()
	if r == nil {
		return old.Read(b)
	}
	return r.Read(b)
}

// registerRand gives the calling goroutine a reader seeded from seed and
// returns the function that removes it.
func registerRand(seed uint64) func() {
	id := goid()
	randMu.Lock()
	defer randMu.Unlock()
	if _, dup := randByG[id]; dup {
		panic("sim: two Clusters open on one goroutine: their raft draws would interleave")
	}
	if randUsers == 0 {
		randOld = cryptorand.Reader
		cryptorand.Reader = dispatchReader{}
	}
	randUsers++
	randByG[id] = &pcgReader{r: rand.NewPCG(seed, 0xe1ec_7104)}
	return func() {
		randMu.Lock()
		defer randMu.Unlock()
		delete(randByG, id)
		randUsers--
		if randUsers == 0 {
			cryptorand.Reader = randOld
		}
	}
}

// goid returns the calling goroutine's id, parsed from its stack header
// ("goroutine 42 [running]:"). Slow-ish (a microsecond), but raft draws only
// when a node changes role.
func goid() uint64 {
	var buf [40]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) <= len(prefix) {
		panic("sim: cannot read the goroutine id")
	}
	b = b[len(prefix):]
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	id, err := strconv.ParseUint(string(b[:i]), 10, 64)
	if err != nil {
		panic("sim: cannot read the goroutine id: " + err.Error())
	}
	return id
}

// pcgReader is a deterministic io.Reader standing in for crypto/rand.Reader.
type pcgReader struct{ r *rand.PCG }

func (p *pcgReader) Read(b []byte) (int, error) {
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], p.r.Uint64())
		copy(b[i:], w[:])
	}
	return len(b), nil
}
