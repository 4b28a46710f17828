package audio

import "math"

// toneLevel is the amplitude of a test tone, about -12 dBFS: loud enough to
// stand out of line noise, far from clipping.
const toneLevel = 8000

// Tone fills dst with G.711 samples of a sine at freq Hz, encoded by encode
// (LinearToULaw or LinearToALaw). first is the position of dst[0] in the
// whole tone, in samples, so consecutive packets continue one wave. Tests
// and tools send it and find it again with ToneShare.
func Tone(dst []byte, encode func(int16) byte, freq float64, first int) {
	for j := range dst {
		dst[j] = encode(int16(toneLevel * math.Sin(2*math.Pi*freq*float64(first+j)/SampleRate)))
	}
}

// ToneShare is the share of the power of s (linear samples at SampleRate)
// that lies at freq, from 0 to 1 (a Goertzel filter): near 1 for a clean
// tone at freq, near 0 for silence or another tone.
func ToneShare(s []int16, freq float64) float64 {
	if len(s) == 0 {
		return 0
	}
	k := 2 * math.Cos(2*math.Pi*freq/SampleRate)
	var q1, q2, energy float64
	for _, v := range s {
		x := float64(v)
		q1, q2 = k*q1-q2+x, q1
		energy += x * x
	}
	if energy == 0 {
		return 0
	}
	return (q1*q1 + q2*q2 - k*q1*q2) / (energy * float64(len(s)) / 2)
}
