package recorder

import (
	"encoding/binary"
	"sort"
	"testing"

	"github.com/maskpbx/maskpbx/internal/audio"
)

// A virtual clock drives the timeline the way the session does: packets
// arrive at frame times, the flusher takes everything older than the
// jitter delay every 250 ms, and the end takes the rest.

const (
	delayFrames = int64(jitterDelay) * SampleRate / 1e9
	flushFrames = 2000 // 250 ms
	ptime       = 160  // 20 ms
)

type arrival struct {
	at      int64
	side    int
	h       rtpHeader
	payload []byte
}

// run places the arrivals in time order and returns the decoded channels
// up to end.
func run(t *testing.T, tl *timeline, arrivals []arrival, end int64) StereoPCM {
	t.Helper()
	sort.SliceStable(arrivals, func(i, j int) bool { return arrivals[i].at < arrivals[j].at })
	var out []byte
	next := int64(flushFrames)
	for _, a := range arrivals {
		for next <= a.at {
			out = tl.take(next-delayFrames, out)
			next += flushFrames
		}
		tl.place(a.side, a.h, a.payload, a.at)
	}
	out = tl.take(end, out)
	if int64(len(out)) != end*bytesPerFrame {
		t.Fatalf("took %d bytes, want %d frames", len(out), end)
	}
	p, err := DecodeWAV(append(wavHeader(int64(len(out))), out...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pcmuTables() [2]*payloadTable {
	var k payloadTable
	k[0], k[8], k[101] = kindPCMU, kindPCMA, kindEvent
	return [2]*payloadTable{&k, &k}
}

// marked is a packet whose every sample is one mu-law byte: where it lands
// in the output shows exactly where the timeline put it.
func marked(b byte) []byte {
	p := make([]byte, ptime)
	for i := range p {
		p[i] = b
	}
	return p
}

// markOf is the mu-law byte for packet k (never silence).
func markOf(k int) byte { return byte(k%100) + 1 }

// stream makes n packets of one side sent every 20 ms from frame start,
// arriving after delay frames (plus per-packet extra delay).
func stream(side int, ssrc, ts0 uint32, seq0 uint16, start int64, n int, extra func(k int) int64) []arrival {
	var out []arrival
	for k := range n {
		a := arrival{
			at:      start + int64(k+1)*ptime + 40 + extra(k), // sent when captured, 5 ms network delay
			side:    side,
			h:       rtpHeader{pt: 0, seq: seq0 + uint16(k), ts: ts0 + uint32(k*ptime), ssrc: ssrc},
			payload: marked(markOf(k)),
		}
		out = append(out, a)
	}
	return out
}

func none(int) int64 { return 0 }

// findMark returns the first frame of ch holding packet k's mark.
func findMark(ch []int16, k int) int {
	want := audio.ULawToLinear[markOf(k)]
	for i, s := range ch {
		if s == want {
			return i
		}
	}
	return -1
}

func TestTimelinePlacesByTimestamp(t *testing.T) {
	const start = 8000 // both streams start one second in
	base := func() []arrival {
		return append(stream(sideClient, 0x1111, 90000, 100, start, 100, none),
			stream(sideManager, 0x2222, 7, 60000, start, 100, none)...)
	}
	end := int64(start + 100*ptime + 4000)

	ref := run(t, newTimeline(pcmuTables()), base(), end)
	refClient, refManager := findMark(ref.Left, 0), findMark(ref.Right, 0)
	if refClient < start || refClient > start+ptime || refManager != refClient {
		t.Fatalf("first packets at %d and %d, want both at about %d", refClient, refManager, start)
	}
	for k := range 100 {
		if got := findMark(ref.Left, k); got != refClient+k*ptime {
			t.Fatalf("client packet %d at %d, want %d", k, got, refClient+k*ptime)
		}
	}
	if s := ref.Left[:start-10]; !silent(s) {
		t.Fatal("audio before the first packet")
	}

	cases := []struct {
		name   string
		mutate func([]arrival) []arrival
		check  func(t *testing.T, p StereoPCM)
	}{
		{"lost packets leave silence of their length", func(a []arrival) []arrival {
			return drop(a, sideClient, 10, 11, 50)
		}, func(t *testing.T, p StereoPCM) {
			for _, k := range []int{10, 11, 50} {
				if s := p.Left[refClient+k*ptime : refClient+(k+1)*ptime]; !silent(s) {
					t.Errorf("lost packet %d is not silence", k)
				}
			}
			for _, k := range []int{9, 12, 51, 99} {
				if got := findMark(p.Left, k); got != refClient+k*ptime {
					t.Errorf("packet %d after a loss at %d, want %d", k, got, refClient+k*ptime)
				}
			}
		}},
		{"reordered packets are put back in order", func(a []arrival) []arrival {
			for i := range a {
				if a[i].side == sideClient && (a[i].h.seq-100)%7 == 3 {
					a[i].at += 3 * ptime // arrives after the next three
				}
			}
			return a
		}, func(t *testing.T, p StereoPCM) {
			if !equal(p.Left, ref.Left) || !equal(p.Right, ref.Right) {
				t.Error("reordering changed the recording")
			}
		}},
		{"SSRC change with a new timestamp base keeps the channels aligned", func(a []arrival) []arrival {
			for i := range a {
				if a[i].side == sideManager && a[i].h.seq-60000 >= 40 {
					// A new source whose clock is behind the old one: without a
					// re-anchor its packets would all look late.
					a[i].h.ssrc, a[i].h.ts, a[i].h.seq = 0x3333, a[i].h.ts-123456789, a[i].h.seq+777
				}
			}
			return a
		}, func(t *testing.T, p StereoPCM) {
			for _, k := range []int{39, 40, 41, 99} {
				if got := findMark(p.Right, k); abs(got-(refManager+k*ptime)) > 40 {
					t.Errorf("manager packet %d at %d, want %d", k, got, refManager+k*ptime)
				}
			}
		}},
		{"a forward timestamp jump does not open a gap", func(a []arrival) []arrival {
			for i := range a {
				if a[i].side == sideClient && a[i].h.seq-100 >= 30 {
					a[i].h.ts += 8000 * 60 // a minute ahead in RTP time, not in real time
				}
			}
			return a
		}, func(t *testing.T, p StereoPCM) {
			for _, k := range []int{30, 60, 99} {
				if got := findMark(p.Left, k); abs(got-(refClient+k*ptime)) > 40 {
					t.Errorf("client packet %d at %d, want %d", k, got, refClient+k*ptime)
				}
			}
		}},
		{"a backward timestamp jump re-anchors after a few packets", func(a []arrival) []arrival {
			for i := range a {
				if a[i].side == sideClient && a[i].h.seq-100 >= 30 {
					a[i].h.ts -= 8000 * 5
				}
			}
			return a
		}, func(t *testing.T, p StereoPCM) {
			for _, k := range []int{30 + lateReanchor, 60, 99} {
				if got := findMark(p.Left, k); abs(got-(refClient+k*ptime)) > 40 {
					t.Errorf("client packet %d at %d, want %d", k, got, refClient+k*ptime)
				}
			}
		}},
		{"jitter within the delay changes nothing", func(a []arrival) []arrival {
			for i := range a {
				if a[i].h.seq != 100 && a[i].h.seq != 60000 { // the first packets come on time
					a[i].at += int64(i*37%9) * 100 // up to 100 ms late
				}
			}
			return a
		}, func(t *testing.T, p StereoPCM) {
			if !equal(p.Left, ref.Left) || !equal(p.Right, ref.Right) {
				t.Error("jitter changed the recording")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := run(t, newTimeline(pcmuTables()), tc.mutate(base()), end)
			if len(p.Left) != int(end) {
				t.Fatalf("length %d, want %d", len(p.Left), end)
			}
			tc.check(t, p)
		})
	}
}

func TestTimelineLateAndStats(t *testing.T) {
	tl := newTimeline(pcmuTables())
	a := stream(sideClient, 1, 0, 0, 0, 50, func(k int) int64 {
		if k == 20 {
			return 6 * 8000 / 10 // 600 ms: beyond the jitter delay and a flush
		}
		return 0
	})
	a = drop(a, sideClient, 30)
	run(t, tl, a, 50*ptime+4000)
	st, _ := tl.snapshot()
	if st.Late != 1 || st.Lost != 1 || st.Packets != 49 || st.Reanchors != 0 {
		t.Fatalf("stats %+v, want 49 packets, 1 late, 1 lost", st)
	}
}

func TestTimelineDTMF(t *testing.T) {
	tl := newTimeline(pcmuTables())
	a := stream(sideClient, 9, 1000, 1, 0, 50, none)
	// Digit 5 at packet 20's time: three updates, then the end three times.
	evTS := uint32(1000 + 20*ptime)
	for i, dur := range []uint16{160, 320, 480, 800, 800, 800} {
		end := byte(0)
		if dur == 800 {
			end = 0x80
		}
		p := []byte{5, end | 10, 0, 0}
		binary.BigEndian.PutUint16(p[2:], dur)
		a = append(a, arrival{at: int64(20*ptime+40) + int64(i)*ptime, side: sideClient,
			h: rtpHeader{pt: 101, seq: uint16(200 + i), ts: evTS, ssrc: 9, marker: i == 0}, payload: p})
	}
	// The manager presses # (event 11) without ever sending an end packet.
	a = append(a, arrival{at: 30 * ptime, side: sideManager, h: rtpHeader{pt: 101, ts: 5, ssrc: 8},
		payload: []byte{11, 10, 0, 160}})
	p := run(t, tl, a, 50*ptime+4000)
	_, dtmf := tl.snapshot()
	if len(dtmf) != 2 {
		t.Fatalf("dtmf %+v, want two events", dtmf)
	}
	if d := dtmf[0]; d.Digit != "5" || d.Side != "client" || d.DurationMS != 100 || abs(int(d.AtMS)-20*20) > 10 {
		t.Errorf("first event %+v, want 5 at 400 ms for 100 ms", d)
	}
	if d := dtmf[1]; d.Digit != "#" || d.Side != "manager" {
		t.Errorf("second event %+v", d)
	}
	// Events are not audio: nothing but the client's packets on the left,
	// silence on the right.
	if !silent(p.Right) {
		t.Error("telephone-event decoded as audio")
	}
}

func TestTimelineIgnoresUnknownPayloads(t *testing.T) {
	tl := newTimeline(pcmuTables())
	a := stream(sideClient, 1, 0, 0, 0, 10, none)
	for i := range a {
		a[i].h.pt = 13 // comfort noise
	}
	p := run(t, tl, a, 10*ptime+4000)
	if !silent(p.Left) {
		t.Error("comfort noise decoded")
	}
	if st, _ := tl.snapshot(); st.Ignored != 10 {
		t.Errorf("ignored %d", st.Ignored)
	}
}

func TestTimelineOverrun(t *testing.T) {
	tl := newTimeline(pcmuTables())
	// Nobody flushes for three seconds: the ring holds 1.5 s.
	for k := range 150 {
		tl.place(sideClient, rtpHeader{seq: uint16(k), ts: uint32(k * ptime), ssrc: 1}, marked(1), int64(k+1)*ptime)
	}
	if st, _ := tl.snapshot(); st.Overruns == 0 {
		t.Fatal("a stalled flusher went unnoticed")
	}
}

func drop(a []arrival, side int, ks ...int) []arrival {
	out := a[:0:0]
	for _, x := range a {
		skip := false
		for _, k := range ks {
			if x.side == side && findK(x) == k {
				skip = true
			}
		}
		if !skip {
			out = append(out, x)
		}
	}
	return out
}

func findK(a arrival) int { return int(a.payload[0]) - 1 }

func silent(s []int16) bool {
	for _, v := range s {
		if v != 0 {
			return false
		}
	}
	return true
}

func equal(a, b []int16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// testPacket is a 20 ms PCMU packet as it comes off the wire.
func testPacket(seq uint16, ts uint32) []byte {
	b := make([]byte, 12+ptime)
	b[0], b[1] = 0x80, 0
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], 0xabcdef)
	return b
}

// TestReceivePathAllocatesNothing: parsing and placing a packet, and the
// flusher taking frames into its buffer, allocate nothing (a thousand
// recorded calls are 100,000 packets a second).
func TestReceivePathAllocatesNothing(t *testing.T) {
	tl := newTimeline(pcmuTables())
	pkt := testPacket(0, 0)
	out := make([]byte, 0, ringFrames*bytesPerFrame)
	var k int64
	allocs := testing.AllocsPerRun(1000, func() {
		k++
		binary.BigEndian.PutUint16(pkt[2:], uint16(k))
		binary.BigEndian.PutUint32(pkt[4:], uint32(k*ptime))
		h, payload, ok := parseRTP(pkt)
		if !ok {
			t.Fatal("parse")
		}
		tl.place(int(k%2), h, payload, (k+1)*ptime)
		out = tl.take(k*ptime-delayFrames, out[:0])
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per packet", allocs)
	}
}

func BenchmarkReceivePacket(b *testing.B) {
	tl := newTimeline(pcmuTables())
	pkt := testPacket(0, 0)
	out := make([]byte, 0, ringFrames*bytesPerFrame)
	b.ReportAllocs()
	for i := range b.N {
		k := int64(i)
		binary.BigEndian.PutUint16(pkt[2:], uint16(k))
		binary.BigEndian.PutUint32(pkt[4:], uint32(k*ptime))
		h, payload, _ := parseRTP(pkt)
		tl.place(0, h, payload, (k+1)*ptime)
		if i%12 == 0 { // the flusher, every 250 ms
			out = tl.take(k*ptime-delayFrames, out[:0])
		}
	}
}
