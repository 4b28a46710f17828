package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBursts(t *testing.T) {
	const ms = int64(1e6)
	us := func(v int64) int64 { return v * 1000 }
	for _, tc := range []struct {
		name        string
		in          []arrival
		count       int
		first       []int64
		queue       []int64
		sizesSorted []int
	}{
		{"empty", nil, 0, nil, nil, nil},
		{
			// Two 20 ms bursts of three packets: the relay takes 50 us per
			// packet, so the third waits for the two before it.
			name: "queueing inside bursts",
			in: []arrival{
				{0, us(50)}, {us(5), us(95)}, {us(10), us(140)},
				{20 * ms, us(60)}, {20*ms + us(5), us(105)}, {20*ms + us(10), us(150)},
			},
			count: 2, first: []int64{us(50), us(60)},
			queue:       []int64{0, us(45), us(90), 0, us(45), us(90)},
			sizesSorted: []int{3, 3},
		},
		{
			// A burst whose first packet was lost is measured from its first
			// relayed one; a lone packet is a burst of its own.
			name:  "lost first packet",
			in:    []arrival{{0, -1}, {us(10), us(70)}, {us(20), us(80)}, {40 * ms, us(30)}},
			count: 2, first: []int64{us(70), us(30)},
			queue:       []int64{0, us(10), 0},
			sizesSorted: []int{1, 3},
		},
		{"all lost", []arrival{{0, -1}, {us(10), -1}}, 1, nil, nil, []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bursts(tc.in, ms)
			slices.Sort(b.sizes)
			if b.count != tc.count || !slices.Equal(b.first, tc.first) || !slices.Equal(b.queue, tc.queue) ||
				!slices.Equal(b.sizes, tc.sizesSorted) {
				t.Fatalf("got count %d first %v queue %v sizes %v", b.count, b.first, b.queue, b.sizes)
			}
		})
	}
}

// TestRunOutput runs the analysis on a synthetic capture: two parties each
// send a burst of two streams every 20 ms through a relay that takes 100 us
// per packet. deploy/bench.sh reads the keys checked here.
func TestRunOutput(t *testing.T) {
	relay, trunk, phone := [4]byte{127, 0, 0, 30}, [4]byte{127, 0, 0, 31}, [4]byte{127, 0, 0, 32}
	var frames []capFrame
	for tick := range 50 {
		at := int64(tick) * 20e6
		for i, from := range [][4]byte{trunk, phone} {
			to := phone
			if from == phone {
				to = trunk
			}
			for s := range 2 {
				// Every stream starts at its own sequence number and
				// timestamp, as SIPp's do; the relay sends under its own SSRC.
				first := 1000 * (2*i + s)
				ssrc, seq, ts := uint32(100*i+s), uint16(first+tick), uint32(160*(first+tick))
				in := at + int64(s)*10e3 // the burst's second packet 10 us later
				out := at + int64(s+1)*100e3
				frames = append(frames,
					capFrame{in, udpFrame(from, relay, 5000, uint16(16000+4*s+2*i), rtpHeader(seq, ts, ssrc))},
					capFrame{out, udpFrame(relay, to, uint16(16000+4*s+2*(1-i)), 5000, rtpHeader(seq, ts, 0xfeed0000+ssrc))})
			}
		}
	}
	slices.SortStableFunc(frames, func(a, b capFrame) int { return int(a.at - b.at) })
	out := runOn(t, frames)
	for k, want := range map[string]string{
		"streams": "4", "lost": "0", "loss_pct": "0.0000",
		"delay_p50_us": "100.0", "delay_max_us": "190.0",
		"first_delay_p99_us": "100.0", "burst_queue_max_us": "90.0", "burst_size_median": "2",
		"from.127.0.0.31.first_delay_max_us": "100.0",
	} {
		if got := out[k]; got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
}

type capFrame struct {
	at    int64
	frame []byte
}

func rtpHeader(seq uint16, ts, ssrc uint32) []byte {
	b := make([]byte, 12+160)
	b[0] = 0x80
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], ssrc)
	return b
}

// udpFrame is a raw IPv4 (link type 101) UDP datagram.
func udpFrame(src, dst [4]byte, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 17
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

// runOn writes frames as a nanosecond pcap, runs the analysis and returns
// its key=value output.
func runOn(t *testing.T, frames []capFrame) map[string]string {
	t.Helper()
	var pcap bytes.Buffer
	gh := make([]byte, 24)
	binary.LittleEndian.PutUint32(gh[0:], 0xa1b23c4d)
	binary.LittleEndian.PutUint16(gh[4:], 2)
	binary.LittleEndian.PutUint16(gh[6:], 4)
	binary.LittleEndian.PutUint32(gh[16:], 65535)
	binary.LittleEndian.PutUint32(gh[20:], linkRaw)
	pcap.Write(gh)
	for _, f := range frames {
		at := f.at + 1e9
		h := make([]byte, 16)
		binary.LittleEndian.PutUint32(h[0:], uint32(at/1e9))
		binary.LittleEndian.PutUint32(h[4:], uint32(at%1e9))
		binary.LittleEndian.PutUint32(h[8:], uint32(len(f.frame)))
		binary.LittleEndian.PutUint32(h[12:], uint32(len(f.frame)))
		pcap.Write(h)
		pcap.Write(f.frame)
	}
	path := filepath.Join(t.TempDir(), "cap.pcap")
	if err := os.WriteFile(path, pcap.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	runErr := run(path, "127.0.0.30", "16000-16999", 0, 0, time.Millisecond)
	os.Stdout = stdout
	w.Close()
	text, _ := io.ReadAll(r)
	if runErr != nil {
		t.Fatal(runErr)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(text), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	return kv
}
