package lab

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// Loopback ports are drawn from [portLow, portHigh): below Linux's default
// ephemeral range (32768-60999), so an outgoing connection of some other
// process cannot take a port between the check and the agent's bind.
const (
	portLow  = 20000
	portHigh = 32000
)

var (
	portMu   sync.Mutex
	portUsed = map[int]bool{} // handed out in this process; never reused
)

// freePorts returns n distinct loopback ports that were free for both TCP
// and UDP on 127.0.0.1 a moment ago and were never handed out before by
// this process.
func freePorts(n int) ([]int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	var out []int
	var held []func()
	defer func() {
		for _, c := range held {
			c()
		}
	}()
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n+1000 {
			return nil, fmt.Errorf("no free loopback ports for TCP and UDP in %d-%d", portLow, portHigh)
		}
		p := portLow + rand.IntN(portHigh-portLow)
		if portUsed[p] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ul, err := net.ListenPacket("udp", addr)
		if err != nil {
			tl.Close()
			continue
		}
		// Hold both until all are chosen, so that no two are equal.
		held = append(held, func() { tl.Close(); ul.Close() })
		portUsed[p] = true
		out = append(out, p)
	}
	return out, nil
}
