package media

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// Each test takes its own slice of ports below the kernel's ephemeral range
// (32768+), so tests running in parallel never compete for a port.
func newTestPool(tb testing.TB, ip string, min, max int) *PortPool {
	tb.Helper()
	pool, err := NewPortPool(ip, min, max)
	if err != nil {
		tb.Fatal(err)
	}
	return pool
}

// allocatePair allocates two ports from pool, for the two legs of a call.
func allocatePair(tb testing.TB, pool *PortPool) (a, b *Port) {
	tb.Helper()
	var err error
	if a, err = pool.Allocate(); err != nil {
		tb.Fatal(err)
	}
	if b, err = pool.Allocate(); err != nil {
		tb.Fatal(err)
	}
	return a, b
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in       string
		min, max int
		ok       bool
	}{
		{"20000-29999", 20000, 29999, true},
		{" 10000 - 10001 ", 10000, 10001, true},
		{"1-65535", 1, 65535, true},
		{"10001-10002", 0, 0, false}, // 10002 has no odd neighbour in range
		{"10001-10003", 10001, 10003, true},
		{"20000", 0, 0, false},
		{"", 0, 0, false},
		{"a-b", 0, 0, false},
		{"30000-20000", 0, 0, false},
		{"0-100", 0, 0, false},
		{"60000-70000", 0, 0, false},
		{"-5-10", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			min, max, err := ParsePortRange(tt.in)
			if !tt.ok {
				if !errors.Is(err, ErrBadPortRange) {
					t.Fatalf("err = %v, want ErrBadPortRange", err)
				}
				return
			}
			if err != nil || min != tt.min || max != tt.max {
				t.Fatalf("got %d, %d, %v; want %d, %d", min, max, err, tt.min, tt.max)
			}
		})
	}
}

func TestNewPortPoolErrors(t *testing.T) {
	if _, err := NewPortPool("not-an-ip", 20000, 20010); err == nil {
		t.Error("bad IP accepted")
	}
	if _, err := NewPortPool("127.0.0.1", 20010, 20000); !errors.Is(err, ErrBadPortRange) {
		t.Errorf("reversed range: %v", err)
	}
}

func TestPortPoolAllocatesEvenPairs(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, "127.0.0.1", 21001, 21010) // pairs 21002, 21004, 21006, 21008
	if pool.Size() != 4 {
		t.Fatalf("Size = %d, want 4", pool.Size())
	}
	var ports []*Port
	for {
		p, err := pool.Allocate()
		if errors.Is(err, ErrNoPorts) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, p)
		rtp := p.LocalAddr()
		if rtp.Addr() != netip.MustParseAddr("127.0.0.1") || rtp.Port()%2 != 0 || rtp.Port() < 21002 || rtp.Port() > 21008 {
			t.Errorf("RTP port %v", rtp)
		}
		if got := p.rtcp.LocalAddr().(*net.UDPAddr).Port; got != int(rtp.Port())+1 {
			t.Errorf("RTCP port %d for RTP %d", got, rtp.Port())
		}
	}
	if len(ports) == 0 {
		t.Fatal("nothing allocated")
	}
	if pool.InUse() != len(ports) {
		t.Errorf("InUse = %d, want %d", pool.InUse(), len(ports))
	}
	for _, p := range ports {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
	if pool.InUse() != 0 {
		t.Errorf("InUse after Close = %d", pool.InUse())
	}
	// Released pairs go back: the same number can be allocated again.
	for range ports {
		p, err := pool.Allocate()
		if err != nil {
			t.Fatalf("re-allocate: %v", err)
		}
		defer p.Close()
	}
}

func TestPortPoolSkipsPortsTheOSRefuses(t *testing.T) {
	t.Parallel()
	// Someone else holds the RTCP port of the first pair.
	squatter, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 21103})
	if err != nil {
		t.Skipf("cannot take 21103 for the test: %v", err)
	}
	defer squatter.Close()

	pool := newTestPool(t, "127.0.0.1", 21102, 21105) // pairs 21102 (refused), 21104
	p, err := pool.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	defer p.Close()
	if p.LocalAddr().Port() != 21104 {
		t.Errorf("got port %d, want 21104", p.LocalAddr().Port())
	}
	if _, err := pool.Allocate(); !errors.Is(err, ErrNoPorts) {
		t.Errorf("err = %v, want ErrNoPorts", err)
	}
	if pool.InUse() != 1 {
		t.Errorf("InUse = %d, want 1 (the refused pair is not in use)", pool.InUse())
	}
	// Once the squatter leaves, the refused pair is usable again.
	squatter.Close()
	q, err := pool.Allocate()
	if err != nil {
		t.Fatalf("after the squatter left: %v", err)
	}
	q.Close()
}

func TestPortPoolNonLocalIP(t *testing.T) {
	pool := newTestPool(t, "192.0.2.1", 21200, 21203) // TEST-NET-1, not ours
	if _, err := pool.Allocate(); err == nil || errors.Is(err, ErrNoPorts) {
		t.Fatalf("err = %v, want a bind error, not ErrNoPorts", err)
	}
	if pool.InUse() != 0 {
		t.Errorf("InUse = %d after failed Allocate", pool.InUse())
	}
}

func TestPortPoolConcurrent(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, "127.0.0.1", 21300, 21339) // 20 pairs
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[uint16]bool{}
	for range 8 {
		wg.Go(func() {
			for range 50 {
				p, err := pool.Allocate()
				if errors.Is(err, ErrNoPorts) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[p.LocalAddr().Port()] {
					t.Errorf("port %d handed out twice", p.LocalAddr().Port())
				}
				seen[p.LocalAddr().Port()] = true
				mu.Unlock()

				mu.Lock()
				delete(seen, p.LocalAddr().Port())
				mu.Unlock()
				p.Close()
			}
		})
	}
	wg.Wait()
	if pool.InUse() != 0 {
		t.Errorf("InUse = %d", pool.InUse())
	}
}
