package ivr

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/audio"
)

// dBm0 is the 16-bit peak amplitude of a sine at level dB (dBm0).
func dBm0(db float64) float64 { return 22700 * math.Pow(10, db/20) }

// g711 passes samples through a G.711 codec, as they travel on the wire.
func g711(s []int16, law string) []int16 {
	out := make([]int16, len(s))
	for i, v := range s {
		if law == "PCMA" {
			out[i] = audio.ALawToLinear[audio.LinearToALaw(v)]
		} else {
			out[i] = audio.ULawToLinear[audio.LinearToULaw(v)]
		}
	}
	return out
}

// keyTone is d of digit's tone pair with the row at rowDB dBm0, the
// column twistDB above it, both off their nominal frequency by offset
// (a fraction), starting at a random phase.
func keyTone(rng *rand.Rand, digit rune, d time.Duration, rowDB, twistDB, offset float64) []float64 {
	i := strings.IndexRune(dtmfKeys, digit)
	fr, fc := dtmfRows[i/4]*(1+offset), dtmfCols[i%4]*(1+offset)
	ar, ac := dBm0(rowDB), dBm0(rowDB+twistDB)
	pr, pc := rng.Float64()*2*math.Pi, rng.Float64()*2*math.Pi
	s := make([]float64, samplesOf(d))
	for j := range s {
		t := float64(j) / sampleRate
		s[j] = ar*math.Sin(2*math.Pi*fr*t+pr) + ac*math.Sin(2*math.Pi*fc*t+pc)
	}
	return s
}

// addNoise adds white noise of RMS level db dBm0 (as a sine's RMS) and
// returns 16-bit samples.
func addNoise(rng *rand.Rand, s []float64, db float64) []int16 {
	rms := dBm0(db) / math.Sqrt2
	out := make([]int16, len(s))
	for i, v := range s {
		v += rng.NormFloat64() * rms
		out[i] = int16(max(math.MinInt16, min(math.MaxInt16, v)))
	}
	return out
}

// detect runs the detector over s in 20 ms packets, as the session does.
func detect(s []int16) string {
	var t toneDetector
	var found []rune
	for len(s) > 0 {
		n := min(len(s), samplesPerPkt)
		found = t.feed(s[:n], found)
		s = s[n:]
	}
	return string(found)
}

func TestInbandDetectsEveryDigit(t *testing.T) {
	cases := []struct {
		name                   string
		rowDB, twistDB, offset float64
		noiseDB                float64
		on, off                time.Duration
	}{
		{"loud", -4, 0, 0, -50, 80 * time.Millisecond, 60 * time.Millisecond},
		{"typical", -10, 2, 0.005, -45, 100 * time.Millisecond, 100 * time.Millisecond},
		{"quiet", -24, 0, 0, -50, 70 * time.Millisecond, 60 * time.Millisecond},
		{"twist +3 dB, 1% high", -12, 3, 0.01, -40, 80 * time.Millisecond, 60 * time.Millisecond},
		{"twist -6 dB, 1% low", -8, -6, -0.01, -40, 80 * time.Millisecond, 60 * time.Millisecond},
		{"noisy (SNR 20 dB)", -10, 0, 0, -30, 100 * time.Millisecond, 80 * time.Millisecond},
		{"short tones (55 ms)", -10, 0, 0, -50, 55 * time.Millisecond, 45 * time.Millisecond},
	}
	for _, tc := range cases {
		for _, law := range []string{"PCMU", "PCMA"} {
			t.Run(tc.name+"/"+law, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
				var signal []float64
				signal = append(signal, make([]float64, samplesOf(37*time.Millisecond))...)
				for _, k := range dtmfKeys {
					signal = append(signal, keyTone(rng, k, tc.on, tc.rowDB, tc.twistDB, tc.offset)...)
					signal = append(signal, make([]float64, samplesOf(tc.off))...)
				}
				got := detect(g711(addNoise(rng, signal, tc.noiseDB), law))
				if got != dtmfKeys {
					t.Fatalf("detected %q, want %q", got, dtmfKeys)
				}
			})
		}
	}
}

// A key held long gives one digit; the same key pressed twice gives two.
func TestInbandOneDigitPerPress(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	held := keyTone(rng, '5', 2*time.Second, -10, 0, 0)
	if got := detect(g711(addNoise(rng, held, -45), "PCMU")); got != "5" {
		t.Fatalf("a 2 s key gave %q, want one 5", got)
	}
	twice := append(keyTone(rng, '7', 90*time.Millisecond, -10, 0, 0), make([]float64, samplesOf(60*time.Millisecond))...)
	twice = append(twice, keyTone(rng, '7', 90*time.Millisecond, -10, 0, 0)...)
	if got := detect(g711(addNoise(rng, twice, -45), "PCMU")); got != "77" {
		t.Fatalf("7 pressed twice gave %q", got)
	}
}

// A key pressed while the whisper plays is heard over the whisper's echo,
// here only 6 dB down (the least echo loss ITU-T G.168 reckons with).
func TestInbandHeardOverThePrompt(t *testing.T) {
	p, err := LoadPrompts("")
	if err != nil {
		t.Fatal(err)
	}
	var speech []int16
	for _, name := range []string{PromptClientCode, "1", "2", "3", PromptPress1, PromptEnterCode} {
		speech = append(speech, p.Clip("ru", name)...)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	mix := toFloat(speech)
	for i := range mix {
		mix[i] /= 2
	}
	for i, k := range "1#0" {
		at := (i + 1) * len(mix) / 4
		for j, v := range keyTone(rng, k, 90*time.Millisecond, -10, 0, 0) {
			mix[at+j] += v
		}
	}
	if got := detect(g711(addNoise(rng, mix, -50), "PCMU")); got != "1#0" {
		t.Fatalf("detected %q over the prompt, want %q", got, "1#0")
	}
}

// Nothing that is not a key press may give a digit: the prompts the PBX
// plays (their echo comes back), voice-band noise, single tones, ringback,
// dial tone, beeps, a blip too short for a key, tones out of spec.
func TestInbandIgnoresWhatIsNoKey(t *testing.T) {
	p, err := LoadPrompts("")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	cases := map[string][]int16{
		"ringback":  Ringback(12 * time.Second),
		"beep":      Beep(1000, time.Second),
		"dial tone": addNoise(rng, sum(sine(350, -13, 2*time.Second), sine(440, -13, 2*time.Second)), -50),
		"20 ms key": addNoise(rng, keyTone(rng, '1', 20*time.Millisecond, -8, 0, 0), -50),
		"keys 5% off": addNoise(rng, append(keyTone(rng, '2', 200*time.Millisecond, -8, 0, 0.05),
			keyTone(rng, '9', 200*time.Millisecond, -8, 0, -0.05)...), -50),
		"twist 12 dB":      addNoise(rng, keyTone(rng, '3', 200*time.Millisecond, -6, -12, 0), -50),
		"too quiet":        addNoise(rng, keyTone(rng, '4', 200*time.Millisecond, -40, 0, 0), -60),
		"voice-band noise": addNoise(rng, make([]float64, 10*sampleRate), -15),
		"vowels":           addNoise(rng, vowels(), -50),
	}
	for i, f := range append(dtmfRows[:], dtmfCols[:]...) {
		cases["single tone "+string(rune('a'+i))] = addNoise(rng, sine(f, -6, time.Second), -50)
	}
	for _, lang := range []string{"en", "ru"} {
		var all []int16
		for _, name := range promptNames {
			all = append(all, p.Clip(lang, name)...)
		}
		cases["prompts "+lang] = all
		cases["prompts "+lang+" with noise"] = addNoise(rng, toFloat(all), -35)
	}
	for name, s := range cases {
		for _, law := range []string{"PCMU", "PCMA"} {
			if got := detect(g711(s, law)); got != "" {
				t.Errorf("%s (%s): detected %q", name, law, got)
			}
		}
	}
}

// vowels is 6 s of voiced speech-like sound whose formants sit on DTMF
// frequencies (the worst case for talk-off): the harmonics of a pitch that
// glides between 90 and 260 Hz, shaped by formants at 697 Hz and 1209 Hz,
// then 852 Hz and 1477 Hz.
func vowels() []float64 {
	s := make([]float64, 6*sampleRate)
	phase := 0.0
	for i := range s {
		t := float64(i) / sampleRate
		f0 := 175 + 85*math.Sin(2*math.Pi*0.7*t)
		phase += 2 * math.Pi * f0 / sampleRate
		f1, f2 := 697.0, 1209.0
		if t >= 3 {
			f1, f2 = 852, 1477
		}
		for k := 1; float64(k)*f0 < 3400; k++ {
			h := float64(k) * f0
			gain := formant(h, f1) + 0.7*formant(h, f2)
			s[i] += dBm0(-12) * gain * math.Sin(float64(k)*phase)
		}
	}
	return s
}

// formant is a resonance's gain at f: 1 at its centre, falling off over
// about 80 Hz.
func formant(f, centre float64) float64 {
	d := (f - centre) / 80
	return 1 / (1 + d*d)
}

func sine(freq, db float64, d time.Duration) []float64 {
	s := make([]float64, samplesOf(d))
	for i := range s {
		s[i] = dBm0(db) * math.Sin(2*math.Pi*freq*float64(i)/sampleRate)
	}
	return s
}

func sum(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range out {
		out[i] = a[i] + b[i]
	}
	return out
}

func toFloat(s []int16) []float64 {
	out := make([]float64, len(s))
	for i, v := range s {
		out[i] = float64(v)
	}
	return out
}

// Garbage in the audio never panics the detector and it keeps working
// after it.
func FuzzInband(f *testing.F) {
	f.Add([]byte{0xff, 0x00, 0x7f, 0x80})
	f.Add(make([]byte, 1500))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var d toneDetector
		samples := make([]int16, len(payload))
		for i, b := range payload {
			samples[i] = audio.ULawToLinear[b]
		}
		d.feed(samples, nil)
		var found []rune
		for _, v := range [][]int16{make([]int16, 400), g711(DTMF('#', 120*time.Millisecond), "PCMU")} {
			found = d.feed(v, found)
		}
		if string(found) != "#" {
			t.Fatalf("after garbage, a # key gave %q", string(found))
		}
	})
}

// Garbage telephone-event payloads never panic the RFC 4733 reader, and
// a digit after them is still heard.
func FuzzEvents(f *testing.F) {
	f.Add(uint32(0), []byte{1, 0x8a, 3, 0xc0})
	f.Add(uint32(0xffffffff), []byte{0xff})
	f.Fuzz(func(t *testing.T, ts uint32, payload []byte) {
		var r eventReader
		r.packet(ts, payload)
		r.packet(ts, payload)
		if d, ok, _ := r.packet(ts+12345, []byte{11, 0x8a, 3, 0xc0}); !ok || d != '#' {
			t.Fatalf("after garbage, a # event gave %q, %v", d, ok)
		}
	})
}

// BenchmarkInband is the detector's cost per 20 ms packet of one leg.
func BenchmarkInband(b *testing.B) {
	rng := rand.New(rand.NewPCG(6, 6))
	noise := g711(addNoise(rng, make([]float64, 50*samplesPerPkt), -20), "PCMU")
	var d toneDetector
	found := make([]rune, 0, 4)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		at := i % 50 * samplesPerPkt
		d.feed(noise[at:at+samplesPerPkt], found[:0])
	}
}
