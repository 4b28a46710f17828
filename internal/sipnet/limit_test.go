package sipnet

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

var (
	stranger = netip.MustParseAddr("192.0.2.1")
	phone    = netip.MustParseAddr("192.0.2.2")
	trunk    = netip.MustParseAddr("192.0.2.3")
)

func newTestLimiter(c *clock) *Limiter {
	return NewLimiter(LimitConfig{
		Rate:     [numClasses]int{Stranger: 10, Phone: 100, Trunk: 0},
		MaxConns: [numClasses]int{Stranger: 2},
		BlockFor: 5 * time.Second,
		Classify: func(ip netip.Addr) Class {
			switch ip {
			case phone:
				return Phone
			case trunk:
				return Trunk
			}
			return Stranger
		},
		Now: c.now,
	})
}

// send charges n datagrams from ip and returns how many got in.
func send(l *Limiter, ip netip.Addr, n int) int {
	in := 0
	for range n {
		if l.Allow(ip, 1) {
			in++
		}
	}
	return in
}

func TestLimiterBlocksAFlooder(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := newTestLimiter(c)
	tests := []struct {
		step       string
		advance    time.Duration
		ip         netip.Addr
		sent, want int
	}{
		{"a stranger under his rate", 0, stranger, 10, 10},
		{"over it: blocked", 0, stranger, 5, 0},
		{"the phone is not", 0, phone, 100, 100},
		{"the trunk has no limit", 0, trunk, 100000, 100000},
		{"still blocked a second later", time.Second, stranger, 1, 0},
		{"flooding on keeps him blocked", 3 * time.Second, stranger, 50, 0},
		{"blocked 5 s after the last excess", 4 * time.Second, stranger, 1, 0},
		{"let in again after it", 1100 * time.Millisecond, stranger, 10, 10},
	}
	for _, tt := range tests {
		c.advance(tt.advance)
		if got := send(l, tt.ip, tt.sent); got != tt.want {
			t.Fatalf("%s: %d of %d let in, want %d", tt.step, got, tt.sent, tt.want)
		}
	}
	st := l.Stats()
	if st.Blocks != 1 || st.Dropped != 5+1+50+1 {
		t.Errorf("stats = %+v", st)
	}
}

// Refused traffic leaves no state once its block is over, and a flood from
// many addresses tracks at most MaxSources of them.
func TestLimiterForgets(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := newTestLimiter(c)
	l.cfg.MaxSources = 100
	for i := range 1000 {
		send(l, netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 20)
	}
	if st := l.Stats(); st.Sources != 100 {
		t.Fatalf("%d sources tracked, want 100", st.Sources)
	}
	if send(l, trunk, 1) != 1 || send(l, phone, 1) != 1 {
		t.Fatal("the trunk or the phone is refused while the table is full")
	}
	c.advance(6 * time.Second)
	send(l, trunk, 1)
	if st := l.Stats(); st.Sources != 1 {
		t.Errorf("%d sources left after the blocks ended, want the trunk alone", st.Sources)
	}
}

func TestLimitedListener(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := newTestLimiter(c)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ln := l.Listener(raw)
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- conn
		}
	}()
	var clients []net.Conn
	for range 3 {
		conn, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		clients = append(clients, conn)
	}
	a, b := <-accepted, <-accepted
	// The third is closed at accept (MaxConns 2): it reads EOF.
	clients[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := clients[2].Read(make([]byte, 1)); err == nil {
		t.Fatalf("the third connection got %d bytes", n)
	}
	if st := l.Stats(); st.ConnsRefused != 1 {
		t.Errorf("stats = %+v", st)
	}
	// Seven messages in one write take the source (three connections
	// charged already) to its rate of 10; the next read closes the
	// connection.
	msg := "OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
	payload := ""
	for range 7 {
		payload += msg
	}
	clients[0].Write([]byte(payload))
	buf := make([]byte, 4096)
	n := 0
	for n < len(payload) {
		m, err := a.Read(buf[n:])
		if err != nil {
			t.Fatalf("read within the rate: %v", err)
		}
		n += m
	}
	clients[0].Write([]byte(msg))
	if _, err := a.Read(buf); err == nil {
		t.Fatal("a read over the rate went through")
	}
	// Closing frees the connection slots.
	a.Close()
	b.Close()
	c.advance(10 * time.Second)
	if s := l.openConn(stranger); s == nil {
		t.Error("no connection allowed after the others closed and the block ended")
	}
}
