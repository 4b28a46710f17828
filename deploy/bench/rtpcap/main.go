// Command rtpcap measures an RTP relay from a packet capture taken on the
// relay's host (deploy/bench.sh captures the loopback): every RTP packet
// that arrives at a relay port is matched with the packet the relay sends
// on (same sequence number and timestamp, from another relay port to the
// other party; the relay writes its own SSRC, so that is not compared:
// SIPp starts every stream at a random sequence number and timestamp). It reports the packets lost inside the relay (socket
// buffer drops included) and the delay the relay added, without needing
// anything from the relay itself.
//
//	rtpcap -pcap cap.pcap -relay 127.0.0.30 -ports 20000-29999 [-head 100ms] [-tail 300ms]
//
// The delay of a packet is mostly queueing when senders send in bursts (SIPp
// sends every stream at once, every 20 ms): the last packet of a burst
// waits for the relay to handle all before it. So packets are also grouped
// into bursts (per direction: arrivals from one party with no gap longer
// than -burst-gap) and two more figures are reported:
//
//   - first_delay_*: the delay of the first packet of each burst, nothing
//     queued ahead of it in its direction: the relay's own latency.
//   - burst_queue_*: each packet's delay minus the first one's in its burst:
//     the time spent queueing behind the rest of the burst.
//
// Output is key=value lines for scripts; delay_* keep their meaning
// (arrival to departure, queueing included).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// streamKey names one RTP stream arriving at the relay.
type streamKey struct {
	from    [4]byte
	ssrc    uint32
	dstPort uint16
}

// pktKey names one packet of a stream, as it is before and after the relay
// (which replaces the SSRC with its own).
type pktKey struct {
	from [4]byte // the party that sent it to the relay
	ts   uint32
	seq  uint16
}

type inPkt struct {
	key  pktKey
	at   int64
	port uint16 // the relay port it arrived at
}

type outPkt struct {
	key pktKey // from is unknown yet: zero
	to  [4]byte
	at  int64
}

type stream struct {
	first, last int64
	count       int
	lastSeq     uint16
	gaps        int // sequence numbers never seen arriving at the relay
}

// dirStats are the results for packets sent by one party.
type dirStats struct {
	in, counted, relayed, dup int
	delays                    []int64
}

func main() {
	pcapPath := flag.String("pcap", "", "capture file (tcpdump -w)")
	relay := flag.String("relay", "", "IPv4 address the relay's RTP ports are on")
	ports := flag.String("ports", "20000-29999", "the relay's RTP port range")
	head := flag.Duration("head", 100*time.Millisecond, "packets arriving this soon after the capture's start are not judged (the capture filter settles)")
	tail := flag.Duration("tail", 300*time.Millisecond, "packets arriving this close to the capture's end are not judged (their copy may leave after it)")
	burstGap := flag.Duration("burst-gap", time.Millisecond, "a quiet spell this long between arrivals from one party starts a new burst")
	flag.Parse()
	if err := run(*pcapPath, *relay, *ports, *head, *tail, *burstGap); err != nil {
		fmt.Fprintln(os.Stderr, "rtpcap:", err)
		os.Exit(1)
	}
}

func run(pcapPath, relay, ports string, head, tail, burstGap time.Duration) error {
	relayIP, err := netip.ParseAddr(relay)
	if err != nil || !relayIP.Is4() {
		return fmt.Errorf("-relay %q: want an IPv4 address", relay)
	}
	lo, hi, err := portRange(ports)
	if err != nil {
		return err
	}
	f, err := os.Open(pcapPath)
	if err != nil {
		return err
	}
	defer f.Close()
	pr, err := newPcapReader(f)
	if err != nil {
		return err
	}

	rip := relayIP.As4()
	var ins []inPkt
	var outs []outPkt
	streams := map[streamKey]*stream{}
	var firstAt, lastAt int64
	frames, other := 0, 0
	for {
		at, frame, err := pr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		frames++
		if firstAt == 0 {
			firstAt = at
		}
		lastAt = max(lastAt, at)
		u, ok := parseUDP4(pr.linkType, frame)
		if !ok || len(u.payload) < 12 || u.payload[0]>>6 != 2 {
			other++
			continue
		}
		if pt := u.payload[1] & 0x7f; pt >= 64 && pt <= 95 {
			other++ // RTCP
			continue
		}
		k := pktKey{
			seq: uint16(u.payload[2])<<8 | uint16(u.payload[3]),
			ts:  be32(u.payload[4:8]),
		}
		ssrc := be32(u.payload[8:12])
		switch {
		case u.dst == rip && inRange(u.dstPort, lo, hi) && u.src != rip:
			k.from = u.src
			ins = append(ins, inPkt{key: k, at: at, port: u.dstPort})
			sk := streamKey{from: u.src, ssrc: ssrc, dstPort: u.dstPort}
			s := streams[sk]
			if s == nil {
				s = &stream{first: at, lastSeq: k.seq - 1}
				streams[sk] = s
			}
			if d := k.seq - s.lastSeq; d > 1 && d < 1000 {
				s.gaps += int(d) - 1
			}
			s.lastSeq = k.seq
			s.last = at
			s.count++
		case u.src == rip && inRange(u.srcPort, lo, hi) && u.dst != rip:
			outs = append(outs, outPkt{key: k, to: u.dst, at: at})
		default:
			other++
		}
	}
	if len(ins) == 0 {
		return fmt.Errorf("no RTP towards %s ports %d-%d in %d captured frames", relay, lo, hi, frames)
	}

	// The parties are whoever sent RTP in; a packet leaving towards one of
	// them came in from another.
	var parties [][4]byte
	arrived := make(map[pktKey]int, len(ins)) // index into ins, -1 once relayed
	dirs := map[[4]byte]*dirStats{}
	start, cutoff := firstAt+int64(head), lastAt-int64(tail)
	for i, p := range ins {
		d := dirs[p.key.from]
		if d == nil {
			d = &dirStats{}
			dirs[p.key.from] = d
			parties = append(parties, p.key.from)
		}
		d.in++
		if p.at < start || p.at > cutoff {
			continue
		}
		if _, dup := arrived[p.key]; dup {
			d.dup++
			continue
		}
		arrived[p.key] = i
		d.counted++
	}
	isParty := map[[4]byte]bool{}
	for _, p := range parties {
		isParty[p] = true
	}
	delayOf := make([]int64, len(ins)) // per arrival; -1 = not relayed
	for i := range delayOf {
		delayOf[i] = -1
	}
	unmatched, negative, elsewhere := 0, 0, 0
	for _, o := range outs {
		if !isParty[o.to] {
			elsewhere++ // e.g. a copy forked to a recorder: not the relayed packet
			continue
		}
		matched := false
		for _, from := range parties {
			if from == o.to {
				continue
			}
			k := o.key
			k.from = from
			i, ok := arrived[k]
			if !ok || i < 0 {
				continue
			}
			arrived[k] = -1
			delay := o.at - ins[i].at
			if delay < 0 {
				negative++
				delay = 0
			}
			delayOf[i] = delay
			d := dirs[from]
			d.relayed++
			d.delays = append(d.delays, delay)
			matched = true
			break
		}
		if !matched {
			unmatched++
		}
	}

	// Results.
	total := &dirStats{}
	gaps, perStreamPPS := 0, []float64{}
	for _, s := range streams {
		gaps += s.gaps
		if s.count > 1 && s.last > s.first {
			perStreamPPS = append(perStreamPPS, float64(s.count-1)/(float64(s.last-s.first)/1e9))
		}
	}
	fmt.Printf("frames=%d\n", frames)
	fmt.Printf("capture_s=%.2f\n", float64(lastAt-firstAt)/1e9)
	fmt.Printf("streams=%d\n", len(streams))
	fmt.Printf("stream_pps_median=%.1f\n", median(perStreamPPS))
	fmt.Printf("in_gaps=%d\n", gaps)
	fmt.Printf("unmatched_out=%d\n", unmatched)
	fmt.Printf("out_elsewhere=%d\n", elsewhere)
	fmt.Printf("negative_delay=%d\n", negative)
	fmt.Printf("other=%d\n", other)
	for _, from := range parties {
		d := dirs[from]
		total.in += d.in
		total.counted += d.counted
		total.relayed += d.relayed
		total.dup += d.dup
		total.delays = append(total.delays, d.delays...)
		printDir("from."+netip.AddrFrom4(from).String()+".", d)
	}
	printDir("", total)

	// A few lost packets, to tell a pattern (all at one port, all at the
	// start) from scattered drops.
	shown := 0
	for i, p := range ins {
		if j, ok := arrived[p.key]; !ok || j != i || shown == 5 {
			continue
		}
		fmt.Printf("lost_sample=%.1fms from=%s seq=%d ts=%d relay_port=%d\n",
			float64(p.at-firstAt)/1e6, netip.AddrFrom4(p.key.from), p.key.seq, p.key.ts, p.port)
		shown++
	}

	// Bursts, per direction, among the judged arrivals.
	arrivals := map[[4]byte][]arrival{}
	for i, p := range ins {
		if p.at >= start && p.at <= cutoff {
			arrivals[p.key.from] = append(arrivals[p.key.from], arrival{at: p.at, delay: delayOf[i]})
		}
	}
	all := &burstStats{}
	for _, from := range parties {
		b := bursts(arrivals[from], int64(burstGap))
		all.add(b)
		printBursts("from."+netip.AddrFrom4(from).String()+".", b)
	}
	printBursts("", all)
	return nil
}

// arrival is a packet arriving at the relay and its delay (-1: not relayed).
type arrival struct{ at, delay int64 }

type burstStats struct {
	count int
	sizes []int
	first []int64 // delay of each burst's first relayed packet
	queue []int64 // each relayed packet's delay minus its burst's first's
}

func (b *burstStats) add(o *burstStats) {
	b.count += o.count
	b.sizes = append(b.sizes, o.sizes...)
	b.first = append(b.first, o.first...)
	b.queue = append(b.queue, o.queue...)
}

// bursts groups arrivals from one party (in capture order) into bursts
// separated by quiet spells of at least gap.
func bursts(in []arrival, gap int64) *burstStats {
	b := &burstStats{}
	first, size := int64(-1), 0
	for i, a := range in {
		if i == 0 || a.at-in[i-1].at >= gap {
			if size > 0 {
				b.sizes = append(b.sizes, size)
			}
			b.count++
			first, size = -1, 0
		}
		size++
		if a.delay < 0 {
			continue
		}
		if first < 0 {
			first = a.delay
			b.first = append(b.first, first)
		}
		b.queue = append(b.queue, max(a.delay-first, 0))
	}
	if size > 0 {
		b.sizes = append(b.sizes, size)
	}
	return b
}

func printBursts(prefix string, b *burstStats) {
	slices.Sort(b.sizes)
	size := 0
	if len(b.sizes) > 0 {
		size = b.sizes[len(b.sizes)/2]
	}
	fmt.Printf("%sbursts=%d\n%sburst_size_median=%d\n", prefix, b.count, prefix, size)
	printQuantiles(prefix+"first_delay_", b.first)
	printQuantiles(prefix+"burst_queue_", b.queue)
}

func printQuantiles(prefix string, v []int64) {
	slices.Sort(v)
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p999", 0.999}, {"max", 1}} {
		fmt.Printf("%s%s_us=%.1f\n", prefix, q.name, float64(quantile(v, q.q))/1e3)
	}
}

func printDir(prefix string, d *dirStats) {
	lost := d.counted - d.relayed
	fmt.Printf("%sin=%d\n%scounted=%d\n%srelayed=%d\n%slost=%d\n%sdup_in=%d\n",
		prefix, d.in, prefix, d.counted, prefix, d.relayed, prefix, lost, prefix, d.dup)
	pct := 0.0
	if d.counted > 0 {
		pct = 100 * float64(lost) / float64(d.counted)
	}
	fmt.Printf("%sloss_pct=%.4f\n", prefix, pct)
	printQuantiles(prefix+"delay_", d.delays)
}

func quantile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func inRange(p uint16, lo, hi int) bool { return int(p) >= lo && int(p) <= hi }

func portRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("-ports %q: want min-max", s)
	}
	return lo, hi, nil
}
