package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/maskpbx/maskpbx/storage"
)

// floodSeconds is how long TestSIPFloodFromOneAddress floods: 10 s in the
// suite, MASKPBX_FLOOD_SECONDS=60 for the target.
func floodSeconds(t *testing.T) time.Duration {
	if v := os.Getenv("MASKPBX_FLOOD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MASKPBX_FLOOD_SECONDS=%q", v)
		}
		return time.Duration(n) * time.Second
	}
	return 10 * time.Second
}

// floodTemplates are the requests the flooder sends: valid ones, each of
// which would make sipgo a transaction that lives 32 s, and mutations.
// The 16 X are overwritten per datagram with a counter, so no two share a
// branch or a Call-ID: sipgo can't take them for retransmissions.
var floodTemplates = []string{
	"OPTIONS sip:" + domain + " SIP/2.0\r\nVia: SIP/2.0/UDP " + strangerIP + ":5060;branch=z9hG4bK-XXXXXXXXXXXXXXXX\r\n" +
		"From: <sip:scan@" + strangerIP + ">;tag=1\r\nTo: <sip:" + domain + ">\r\nCall-ID: XXXXXXXXXXXXXXXX\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
	"REGISTER sip:" + domain + " SIP/2.0\r\nVia: SIP/2.0/UDP " + strangerIP + ":5060;branch=z9hG4bK-XXXXXXXXXXXXXXXX\r\n" +
		"From: <sip:100@" + domain + ">;tag=2\r\nTo: <sip:100@" + domain + ">\r\nCall-ID: XXXXXXXXXXXXXXXX\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:100@" + strangerIP + ":5060>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
	"INVITE sip:74950000000@" + domain + " SIP/2.0\r\nVia: SIP/2.0/UDP " + strangerIP + ":5060;branch=z9hG4bK-XXXXXXXXXXXXXXXX\r\n" +
		"From: <sip:79161234567@" + strangerIP + ">;tag=3\r\nTo: <sip:74950000000@" + domain + ">\r\nCall-ID: XXXXXXXXXXXXXXXX\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:79161234567@" + strangerIP + ":5060>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n",
}

// flooder sends datagrams from several ports of one address as fast as it
// can until stop is closed.
type flooder struct {
	sent atomic.Uint64
}

func (f *flooder) run(t *testing.T, to string, stop <-chan struct{}) {
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Error(err)
		return
	}
	var socks []*net.UDPConn
	for range 4 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(strangerIP)})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		socks = append(socks, c)
	}
	var msgs [][]byte
	for _, tmpl := range floodTemplates {
		msgs = append(msgs, []byte(tmpl))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var ctr [8]byte
	for n := uint64(0); ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		for i := range ctr {
			ctr[i] = byte(n >> (8 * i))
		}
		tag := hex.AppendEncode(nil, ctr[:])
		m := msgs[n%uint64(len(msgs))]
		out := make([]byte, len(m))
		copy(out, m)
		for i := 0; i+16 <= len(out); i++ {
			if out[i] == 'X' && string(out[i:i+16]) == "XXXXXXXXXXXXXXXX" {
				copy(out[i:], tag)
			}
		}
		if n%4 == 3 { // a mutation: a few bytes anywhere flipped
			for range 3 {
				out[rng.IntN(len(out))] = byte(rng.IntN(256))
			}
		}
		if _, err := socks[n%uint64(len(socks))].WriteToUDP(out, raddr); err == nil {
			f.sent.Add(1)
		}
	}
}

// tcpFlood opens connections from the flooding address and pours
// requests into them, a bounded number, so the machine's ports are not
// used up.
func tcpFlood(to string, stop <-chan struct{}) (opened, refused int) {
	burst := []byte(floodTemplates[0])
	for range 200 {
		select {
		case <-stop:
			return opened, refused
		default:
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(strangerIP)}, Timeout: time.Second}
		c, err := d.Dial("tcp", to)
		if err != nil {
			refused++
			continue
		}
		opened++
		_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		for range 50 {
			if _, err := c.Write(burst); err != nil {
				break
			}
		}
		c.Close()
	}
	return opened, refused
}

// heapNow is the live heap after a collection.
func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// optionsPing sends one OPTIONS from conn and says whether 200 came back.
func optionsPing(conn *net.UDPConn, to *net.UDPAddr, i int) bool {
	req := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ping%d\r\n"+
		"From: <sip:trunk@%s>;tag=p\r\nTo: <sip:%s>\r\nCall-ID: ping-%d\r\nCSeq: %d OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		domain, conn.LocalAddr(), i, trunkIP, domain, i, i+1)
	callID := fmt.Sprintf("Call-ID: ping-%d\r\n", i)
	if _, err := conn.WriteToUDP([]byte(req), to); err != nil {
		return false
	}
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return false
		}
		if res := buf[:n]; bytes.HasPrefix(res, []byte("SIP/2.0 200 ")) && bytes.Contains(res, []byte(callID)) {
			return true
		}
	}
}

// Finding 10: one address floods serve with valid and mutated REGISTER,
// OPTIONS and INVITE over UDP (as fast as this process can send) and TCP.
// The flood is dropped before parsing: the heap stays bounded, the trunk's
// OPTIONS keep being answered and a call from the trunk connects.
func TestSIPFloodFromOneAddress(t *testing.T) {
	duration := floodSeconds(t)
	sampled := zapcore.NewSamplerWithOptions(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(io.Discard), zap.InfoLevel), time.Second, 100, 100) // serve's production log, written nowhere
	s := startSystemLogged(t, func(c *Config) {
		c.SIPRateLimit, c.SIPRateLimitPhone, c.SIPRateLimitTrunk = 200, 2000, 20000
		c.SIPRateLimitBlock = 30 * time.Second
	}, zap.New(sampled))
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)

	trunk, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(trunkIP)})
	if err != nil {
		t.Fatal(err)
	}
	defer trunk.Close()
	pbxAddr, err := net.ResolveUDPAddr("udp", s.sipAddr)
	if err != nil {
		t.Fatal(err)
	}
	if !optionsPing(trunk, pbxAddr, 0) {
		t.Fatal("the trunk's OPTIONS is not answered before the flood")
	}
	base := heapNow()

	stop := make(chan struct{})
	var f flooder
	var wg sync.WaitGroup
	wg.Go(func() { f.run(t, s.sipAddr, stop) })
	var tcpOpened, tcpRefused int
	wg.Go(func() { tcpOpened, tcpRefused = tcpFlood(s.sipAddr, stop) })

	// While it floods: the trunk's OPTIONS answered, a call from the trunk
	// answered by anna's phone, the heap sampled.
	deadline := time.Now().Add(duration)
	var peak uint64
	var pings, answered int
	callDone := false
	pace := time.NewTicker(200 * time.Millisecond)
	defer pace.Stop()
	for i := 1; time.Now().Before(deadline); i++ {
		pings++
		if optionsPing(trunk, pbxAddr, i) {
			answered++
		}
		if !callDone && time.Until(deadline) < duration/2 {
			ph := phone(t, s, "anna", annaIP, 5070, 41302, false, 1)
			tr := trunkCall(t, s, acmeNumber, 41300, true, 500)
			tr.Wait()
			ph.Wait()
			callDone = true
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapAlloc)
		<-pace.C
	}
	close(stop)
	wg.Wait()
	cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	st := s.run.SIP.FloodStats()
	sent := f.sent.Load()
	after := heapNow()
	t.Logf("flood %v: %d datagrams sent (%.0f/s), %d dropped before parsing, %d passed (all sources), %d blocks; "+
		"TCP %d connections opened, %d refused by the kernel, %d closed at accept; "+
		"heap %.1f MB before, peak %.1f MB, %.1f MB after; trunk OPTIONS %d/%d answered; call %s; %d UDP peers in sipgo",
		duration, sent, float64(sent)/duration.Seconds(), st.Dropped, st.Passed, st.Blocks,
		tcpOpened, tcpRefused, st.ConnsRefused, mb(base), mb(peak), mb(after), answered, pings, cdr.Disposition, s.run.SIP.UDPPeers())

	// What the PBX read of the flood was dropped unparsed; the kernel
	// drops what it had no time to read.
	if read := st.Dropped + st.Passed; st.Dropped < read*99/100 || st.Dropped < sent/2 {
		t.Errorf("%d of %d datagrams read (%d sent) dropped before parsing, want 99%% of those read and half of those sent",
			st.Dropped, read, sent)
	}
	if st.Blocks == 0 || st.ConnsRefused == 0 {
		t.Errorf("the flooding source was never blocked: %+v", st)
	}
	if peak > base+40<<20 || peak > 100<<20 {
		t.Errorf("heap peaked at %.1f MB from %.1f MB: want under 100 MB and 40 MB of growth", mb(peak), mb(base))
	}
	if answered < pings*9/10 {
		t.Errorf("the trunk's OPTIONS: %d of %d answered during the flood", answered, pings)
	}
	if cdr.Disposition != "answered" {
		t.Errorf("the trunk's call during the flood: CDR %+v", cdr)
	}
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }
