package sim

import (
	"fmt"
	"testing"
	"time"
)

func TestQuick(t *testing.T) {
	start := time.Now()
	var worst time.Duration
	for seed := uint64(1); seed <= 100; seed++ {
		s := time.Now()
		rep, err := Run(seed, Options{})
		worst = max(worst, time.Since(s))
		if err != nil {
			fmt.Println(seed, err)
			fmt.Println(rep)
		}
	}
	fmt.Println("avg", time.Since(start)/100, "worst", worst)
}
