package pbx

import (
	"sync"
	"sync/atomic"
	"time"
)

// admission keeps a node from taking more calls than it can set up. A call
// in setup is one between its INVITE and the first ring of a phone: the
// node's own work (routing lookup, relay ports, INVITEs to phones). When
// the node falls behind (CPU, Postgres, the recorder), calls pile up there,
// so their number is the one signal that covers every cause. Beyond the
// limit a call is refused at once with 503 and Retry-After, before it takes
// anything, so the calls already admitted still connect (goodput holds at
// capacity instead of every call timing out).
type admission struct {
	limit    int64 // calls in setup at most; 0: no limit
	inFlight atomic.Int64
	shed     atomic.Uint64

	mu         sync.Mutex
	lookupEWMA time.Duration // smoothed routing lookup time, for /metrics
}

func newAdmission(limit int) *admission { return &admission{limit: int64(limit)} }

// setupSlot is one call's place in setup; leave frees it, once.
type setupSlot struct {
	a    *admission
	shed bool // the call must be refused
	once sync.Once
}

// enter takes a setup slot for a new call, or marks it shed.
func (a *admission) enter() *setupSlot {
	n := a.inFlight.Add(1)
	s := &setupSlot{a: a}
	if a.limit > 0 && n > a.limit {
		s.shed = true
		a.shed.Add(1)
	}
	return s
}

// leave frees the slot: the call rings, or ended before it did.
func (s *setupSlot) leave() {
	s.once.Do(func() { s.a.inFlight.Add(-1) })
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
}

// AdmissionStats reports the node's admission control.
func (s *Server) AdmissionStats() AdmissionStats {
	if s.calls == nil {
		return AdmissionStats{}
	}
	a := s.calls.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	return AdmissionStats{CallsInSetup: a.inFlight.Load(), Shed: a.shed.Load(), LookupTime: a.lookupEWMA}
}
