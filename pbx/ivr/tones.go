package ivr

import (
	"math"
	"time"

	"github.com/maskpbx/maskpbx/internal/audio"
)

const sampleRate = audio.SampleRate

// Tone levels as 16-bit peak amplitudes. 0 dBm0 (G.711's reference level)
// is a sine of peak 22,700 on this scale.
const (
	ringbackLevel = 2800 // about -18 dBm0
	beepLevel     = 5700 // about -12 dBm0
	dtmfLevel     = 5100 // about -13 dBm0 per frequency, as phones send
)

// Ringback is d of ringing tone as callers across Europe know it (the CEPT
// tone, not the North American 440 + 480 Hz): 425 Hz, 1 s on, 4 s off,
// starting with the tone. A caller held while a manager's mobile takes the whisper hears
// this; Play it in a loop for longer waits.
func Ringback(d time.Duration) []int16 {
	n := samplesOf(d)
	s := make([]int16, n)
	const on, period = sampleRate, 5 * sampleRate
	for start := 0; start < n; start += period {
		addSine(s[start:min(n, start+on)], 425, ringbackLevel)
	}
	return s
}

// Beep is d of a freq Hz tone, for a short signal (a prompt's end, a
// recording notice).
func Beep(freq float64, d time.Duration) []int16 {
	s := make([]int16, samplesOf(d))
	addSine(s, freq, beepLevel)
	return s
}

// Silence is d of silence, a pause between clips.
func Silence(d time.Duration) []int16 { return make([]int16, samplesOf(d)) }

// dtmfRows and dtmfCols are the DTMF frequencies (ITU-T Q.23); the digit at
// row r, column c is dtmfKeys[4*r+c].
var (
	dtmfRows = [4]float64{697, 770, 852, 941}
	dtmfCols = [4]float64{1209, 1336, 1477, 1633}
)

const dtmfKeys = "123A456B789C*0#D"

// DTMF is d of the tone pair of digit (0-9, *, #, A-D) at the level phones
// send, for sending a digit in the audio; nil for any other rune.
func DTMF(digit rune, d time.Duration) []int16 {
	for i, k := range dtmfKeys {
		if k == digit {
			s := make([]int16, samplesOf(d))
			addSine(s, dtmfRows[i/4], dtmfLevel)
			addSine(s, dtmfCols[i%4], dtmfLevel)
			return s
		}
	}
	return nil
}

func samplesOf(d time.Duration) int { return int(max(d, 0) * sampleRate / time.Second) }

// addSine adds a sine of freq Hz and peak level to s, faded in and out over
// 4 ms so that it starts and stops without a click.
func addSine(s []int16, freq, level float64) {
	const ramp = sampleRate * 4 / 1000
	for i := range s {
		g := min(1, float64(i)/ramp, float64(len(s)-1-i)/ramp)
		v := float64(s[i]) + g*level*math.Sin(2*math.Pi*freq*float64(i)/sampleRate)
		s[i] = int16(max(math.MinInt16, min(math.MaxInt16, v)))
	}
}
