package lab

import (
	"fmt"
	"net"
	"testing"
)

func TestFreePorts(t *testing.T) {
	a, err := freePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	b, err := freePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range append(a, b...) {
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if p < portLow || p >= portHigh {
			t.Fatalf("port %d outside %d-%d", p, portLow, portHigh)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("tcp %s: %v", addr, err)
		}
		ul, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("udp %s: %v", addr, err)
		}
		tl.Close()
		ul.Close()
	}
}
