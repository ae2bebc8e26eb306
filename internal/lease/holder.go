package lease

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Forever is the Until of a node that needs no peer to hold its lease (it
// is the only voter).
const Forever = time.Duration(math.MaxInt64)

// Holder is a node's own side of the lease: it collects the echoes of its
// send times from its peers and says until when the lease holds. It is
// not safe for concurrent use. Use one Holder per incarnation of the node:
// echoes of an earlier incarnation's clock mean nothing.
type Holder struct {
	cfg    Config
	self   string
	voters []string // sorted, self excluded
	voting bool     // self is a voter
	echo   map[string]time.Duration
	until  time.Duration
}

// NewHolder returns a Holder with no voters: call SetVoters before use.
func NewHolder(cfg Config) (*Holder, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	return &Holder{cfg: cfg, echo: map[string]time.Duration{}}, nil
}

// SetVoters sets the voting members (self among them or not) and this
// node's name. Echoes already observed are kept.
func (h *Holder) SetVoters(voters []string, self string) {
	h.self = self
	h.voting = false
	h.voters = h.voters[:0]
	for _, v := range voters {
		if v == self {
			h.voting = true
			continue
		}
		h.voters = append(h.voters, v)
	}
	slices.Sort(h.voters)
	h.voters = slices.Compact(h.voters)
	h.recompute()
}

// Observe records that a heartbeat from peer from, received at now, echoed
// echoedSend: this node's own send time of the newest heartbeat that peer
// had received from it. Pass only echoes addressed to this incarnation
// (the heartbeat's ToBoot is this node's BootID); an echo from the future
// (after now) is ignored.
func (h *Holder) Observe(now time.Duration, from string, echoedSend time.Duration) {
	if from == h.self || echoedSend > now || echoedSend < 0 {
		return
	}
	if old, ok := h.echo[from]; ok && old >= echoedSend {
		return
	}
	h.echo[from] = echoedSend
	h.recompute()
}

// need is the number of peers whose echoes the lease needs.
func (h *Holder) need() int {
	n := len(h.voters)
	if h.voting {
		return majority(n+1) - 1
	}
	return majority(n)
}

func (h *Holder) recompute() {
	k := h.need()
	if k == 0 {
		if h.voting {
			h.until = Forever
		} else {
			h.until = 0 // no voters at all
		}
		return
	}
	echoes := make([]time.Duration, 0, len(h.voters))
	for _, v := range h.voters {
		if e, ok := h.echo[v]; ok {
			echoes = append(echoes, e)
		}
	}
	if len(echoes) < k {
		h.until = 0
		return
	}
	slices.Sort(echoes)
	h.until = echoes[len(echoes)-k] + h.cfg.LeaseDuration
}

// Until returns the instant (on this node's clock) at which the lease
// ends: 0 if it was never held, Forever if this node is the only voter.
func (h *Holder) Until() time.Duration { return h.until }

// Valid reports whether the lease holds at now.
func (h *Holder) Valid(now time.Duration) bool { return now < h.until }

// Remaining returns how long the lease still holds at now (0 if it does
// not). The agent starts stopping its resources when this falls below
// their stop time.
func (h *Holder) Remaining(now time.Duration) time.Duration {
	if h.until == Forever {
		return Forever
	}
	return max(0, h.until-now)
}

// String renders the holder for logs and tests: the lease end and each
// voter's newest echo.
func (h *Holder) String() string {
	var b strings.Builder
	switch h.until {
	case Forever:
		b.WriteString("until=forever")
	default:
		fmt.Fprintf(&b, "until=%s", h.until)
	}
	fmt.Fprintf(&b, " need=%d", h.need())
	for _, v := range h.voters {
		if e, ok := h.echo[v]; ok {
			fmt.Fprintf(&b, " %s=%s", v, e)
		} else {
			fmt.Fprintf(&b, " %s=-", v)
		}
	}
	return b.String()
}
