package pbx

import (
	"sync"
	"sync/atomic"
	"time"
)

// admission keeps a node from taking more calls than it can set up. A call
// in setup is one between its INVITE and the first answer of a phone (a
// ring or the answer): the node's own work (routing lookup, relay ports,
// INVITEs to phones). When the node falls behind (CPU, Postgres, the
// recorder), setups get slow and pile up, whatever the cause. A new call is
// refused at once with 503 and Retry-After, before it takes anything, when
// setups have been slow (their smoothed time above maxSetupDelay) while more
// than a handful are in progress, or when the calls in setup reach the hard
// limit (--max-setups). The calls already admitted then still connect:
// goodput holds at capacity instead of every call timing out.
type admission struct {
	limit    int64 // calls in setup at most; 0: no limit
	inFlight atomic.Int64
	shed     atomic.Uint64
	// setupEWMA is the smoothed setup time in nanoseconds (see leave).
	setupEWMA atomic.Int64

	mu         sync.Mutex
	lookupEWMA time.Duration // smoothed routing lookup time, for /metrics
}

// maxSetupDelay is the smoothed setup time beyond which a node counts as
// overloaded: twice the time after which a trunk retransmits its INVITE.
const maxSetupDelay = time.Second

// slowSetupFloor is how many calls must be in setup before slow setups
// shed calls: a few calls to slow phones are not an overload.
const slowSetupFloor = 64

func newAdmission(limit int) *admission { return &admission{limit: int64(limit)} }

// setupSlot is one call's place in setup; leave frees it, once.
type setupSlot struct {
	a     *admission
	shed  bool // the call must be refused
	start time.Time
	once  sync.Once
}

// enter takes a setup slot for a new call, or marks it shed.
func (a *admission) enter() *setupSlot {
	n := a.inFlight.Add(1)
	s := &setupSlot{a: a, start: time.Now()}
	slow := n > slowSetupFloor && time.Duration(a.setupEWMA.Load()) > maxSetupDelay
	if (a.limit > 0 && n > a.limit) || slow {
		s.shed = true
		a.shed.Add(1)
	}
	return s
}

// leave frees the slot: a phone rang or answered, or the call ended before
// one did. An admitted call's setup time feeds the average.
func (s *setupSlot) leave() {
	s.once.Do(func() {
		s.a.inFlight.Add(-1)
		if s.shed {
			return
		}
		d := int64(time.Since(s.start))
		for {
			old := s.a.setupEWMA.Load()
			next := d
			if old != 0 {
				next = old + (d-old)/16
			}
			if s.a.setupEWMA.CompareAndSwap(old, next) {
				return
			}
		}
	})
}

// observeLookup feeds one routing lookup's duration into the average.
func (a *admission) observeLookup(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lookupEWMA == 0 {
		a.lookupEWMA = d
		return
	}
	a.lookupEWMA += (d - a.lookupEWMA) / 8
}

// AdmissionStats is what /metrics shows of admission control.
type AdmissionStats struct {
	CallsInSetup int64         // calls between INVITE and the first ring
	Shed         uint64        // calls refused with 503 for overload
	LookupTime   time.Duration // smoothed routing lookup time
	SetupTime    time.Duration // smoothed setup time of admitted calls
}

// AdmissionStats reports the node's admission control.
func (s *Server) AdmissionStats() AdmissionStats {
	if s.calls == nil {
		return AdmissionStats{}
	}
	a := s.calls.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	return AdmissionStats{CallsInSetup: a.inFlight.Load(), Shed: a.shed.Load(), LookupTime: a.lookupEWMA,
		SetupTime: time.Duration(a.setupEWMA.Load())}
}
