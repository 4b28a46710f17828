package ivr

import "math"

// In-band DTMF detection, for trunks that pass digits as tones in the audio.
// The decoded G.711 is cut into blocks of blockLen samples (12.75 ms: wide
// enough filters for the ±1.5 % frequency tolerance of ITU-T Q.24, narrow
// enough to tell the rows apart), and a Goertzel filter measures each DTMF
// frequency in each block. A block holds a digit when one row and one
// column stand out:
//
//   - each is at least minToneLevel (about -30 dBm0) loud;
//   - the twist is within what Q.24 allows: the column no more than
//     reverseTwist above the row, the row no more than normalTwist above
//     the column;
//   - each is relativePeak above every other row (column);
//   - together they carry at least minToneShare of the block's energy, so
//     speech, music and noise, whose energy is spread, do not count, nor
//     does a single tone (ringback, a beep) or a prompt's echo.
//
// A digit is reported once, after hitsToBegin blocks in a row hold it
// (a tone of about 50 ms, Q.24's minimum being 40 ms), and the next digit
// may follow after missesToEnd blocks without it.

const (
	blockLen        = 102
	hitsToBegin     = 3
	missesToEnd     = 2
	minDigitSamples = (hitsToBegin + missesToEnd) * blockLen

	minToneLevel = 700  // peak amplitude of one tone, 16-bit scale
	normalTwist  = 6.31 // 8 dB, as a power ratio
	reverseTwist = 2.51 // 4 dB
	relativePeak = 6.31 // 8 dB
	minToneShare = 0.8
)

// minTonePower is the Goertzel power of a tone of minToneLevel over a block.
const minTonePower = (minToneLevel * blockLen / 2) * (minToneLevel * blockLen / 2)

// goertzelCoef are 2cos(2πf/rate) for the rows, then the columns.
var goertzelCoef = func() (c [8]float64) {
	for i, f := range append(dtmfRows[:], dtmfCols[:]...) {
		c[i] = 2 * math.Cos(2*math.Pi*f/sampleRate)
	}
	return c
}()

// toneDetector is the in-band state of one stream; the session's reader
// goroutine owns it.
type toneDetector struct {
	block  [blockLen]float64
	n      int  // samples in block
	cand   byte // the digit the last blocks held, 0 for none
	hits   int  // blocks in a row that held cand
	held   byte // the digit reported and not yet released, 0 for none
	misses int  // blocks in a row without held
}

// feed takes decoded samples and appends the digits that begin in them to
// found.
func (t *toneDetector) feed(samples []int16, found []rune) []rune {
	for _, v := range samples {
		t.block[t.n] = float64(v)
		if t.n++; t.n < blockLen {
			continue
		}
		t.n = 0
		if d := t.step(blockDigit(&t.block)); d != 0 {
			found = append(found, rune(d))
		}
	}
	return found
}

// step advances the state with what one block held (0: no digit) and
// returns a digit that now begins.
func (t *toneDetector) step(d byte) byte {
	if t.held != 0 {
		if d == t.held {
			t.misses = 0
			return 0
		}
		if t.misses++; t.misses < missesToEnd {
			return 0
		}
		t.held, t.misses = 0, 0
	}
	if d == 0 || d != t.cand {
		t.cand, t.hits = d, 0
	}
	if d == 0 {
		return 0
	}
	if t.hits++; t.hits < hitsToBegin {
		return 0
	}
	t.held, t.cand, t.hits = d, 0, 0
	return d
}

// blockDigit is the digit a block holds by the rules above, or 0.
func blockDigit(b *[blockLen]float64) byte {
	var q1, q2 [8]float64
	energy := 0.0
	for _, x := range b {
		energy += x * x
		for i, k := range goertzelCoef {
			q1[i], q2[i] = k*q1[i]-q2[i]+x, q1[i]
		}
	}
	var power [8]float64
	for i, k := range goertzelCoef {
		power[i] = q1[i]*q1[i] + q2[i]*q2[i] - k*q1[i]*q2[i]
	}
	row, col := strongest(power[:4]), strongest(power[4:])
	rp, cp := power[row], power[4+col]
	switch {
	case rp < minTonePower || cp < minTonePower:
		return 0
	case cp > rp*reverseTwist || rp > cp*normalTwist:
		return 0
	case !standsOut(power[:4], row) || !standsOut(power[4:], col):
		return 0
	case rp+cp < minToneShare*energy*blockLen/2:
		return 0
	}
	return dtmfKeys[4*row+col]
}

func strongest(p []float64) int {
	best := 0
	for i := range p {
		if p[i] > p[best] {
			best = i
		}
	}
	return best
}

// standsOut reports whether p[best] is relativePeak above every other p.
func standsOut(p []float64, best int) bool {
	for i := range p {
		if i != best && p[i]*relativePeak > p[best] {
			return false
		}
	}
	return true
}
