package audio

import "testing"

func TestTone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		encode func(int16) byte
		decode *[256]int16
	}{
		{"PCMU", LinearToULaw, ULawToLinear},
		{"PCMA", LinearToALaw, ALawToLinear},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Ten 20 ms packets, written one at a time as a sender would.
			var samples []int16
			packet := make([]byte, 160)
			for i := range 10 {
				Tone(packet, tc.encode, 1000, i*len(packet))
				for _, b := range packet {
					samples = append(samples, tc.decode[b])
				}
			}
			if s := ToneShare(samples, 1000); s < 0.9 {
				t.Errorf("share at 1000 Hz = %.2f, want > 0.9", s)
			}
			if s := ToneShare(samples, 400); s > 0.05 {
				t.Errorf("share at 400 Hz = %.2f, want < 0.05", s)
			}
		})
	}
	if ToneShare(nil, 1000) != 0 || ToneShare(make([]int16, 160), 1000) != 0 {
		t.Error("silence has a tone")
	}
}
