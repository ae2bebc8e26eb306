package lease

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Defaults, from the design's default timings.
const (
	DefaultLeaseDuration   = time.Second
	DefaultWatchdogTimeout = 2 * time.Second
	DefaultMargin          = 250 * time.Millisecond
	// DefaultDrift is a generous bound on clock rate error: crystals are
	// within 100 ppm and NTP slews CLOCK_MONOTONIC by at most 500 ppm;
	// watchdog timers are often less precise.
	DefaultDrift = 0.01
	// MaxDrift bounds Config.Drift.
	MaxDrift = 0.1
)

// Config holds the timings shared by the Holder and the Judge. Every node
// of a cluster must use the same values. Zero values take defaults.
type Config struct {
	// LeaseDuration: how long an echo keeps the lease (on the holder's
	// clock). The membership node timeout should be at least this.
	LeaseDuration time.Duration
	// WatchdogTimeout is the watchdog's timeout: it resets the node when
	// not petted for this long.
	WatchdogTimeout time.Duration
	// Margin is added to the Judge's wait for what the arithmetic does not
	// cover: the time a reset or a SIGKILL takes to complete.
	Margin time.Duration
	// Drift bounds the rate error of every clock involved, as a fraction
	// (0.01 = 1%). It must be below MaxDrift. Use a negative value for
	// exactly 0 (tests).
	Drift float64
}

func (c Config) withDefaults() Config {
	if c.LeaseDuration == 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.WatchdogTimeout == 0 {
		c.WatchdogTimeout = DefaultWatchdogTimeout
	}
	if c.Margin == 0 {
		c.Margin = DefaultMargin
	}
	if c.Drift == 0 {
		c.Drift = DefaultDrift
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.LeaseDuration < 0 || c.WatchdogTimeout < 0 || c.Margin < 0:
		return errors.New("lease: durations must not be negative")
	case c.Drift >= MaxDrift || math.IsNaN(c.Drift):
		return fmt.Errorf("lease: drift %g must be below %g", c.Drift, MaxDrift)
	}
	return nil
}

// WithDefaults returns the configuration with defaults applied, or an
// error if it is invalid.
func (c Config) WithDefaults() (Config, error) {
	c = c.withDefaults()
	return c, c.validate()
}

// ResetBound is how long after the Judge's confirmation a node is taken
// as reset by its watchdog: two watchdog timeouts (one for a pet that a
// stall made late, one for the watchdog itself) stretched by the drift
// of the watchdog's timer and of the Judge's clock, plus Margin.
func (c Config) ResetBound() time.Duration {
	c = c.withDefaults()
	return mulUp(2*c.WatchdogTimeout, c.fast()) + c.Margin
}

// rho is the drift bound (a negative Drift means 0).
func (c Config) rho() float64 { return max(0, c.Drift) }

// fast is the largest ratio between two clocks' readings of one interval.
func (c Config) fast() float64 { return (1 + c.rho()) / (1 - c.rho()) }

// slow is the smallest ratio between two clocks' readings of one interval.
func (c Config) slow() float64 { return (1 - c.rho()) / (1 + c.rho()) }

// mulUp and mulDown scale d by f, rounding away from and toward safety.
func mulUp(d time.Duration, f float64) time.Duration {
	return time.Duration(math.Ceil(float64(d) * f))
}

func mulDown(d time.Duration, f float64) time.Duration {
	return time.Duration(math.Floor(float64(d) * f))
}

// majority is the number of votes that make a majority of n.
func majority(n int) int { return n/2 + 1 }
