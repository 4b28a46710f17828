package audio

import (
	"math"
	"testing"
)

func TestG711(t *testing.T) {
	if ULawToLinear[0xff] != 0 || ULawToLinear[0x7f] != 0 || ULawToLinear[0x00] != -32124 || ULawToLinear[0x80] != 32124 {
		t.Errorf("mu-law table edges: %d %d %d %d", ULawToLinear[0xff], ULawToLinear[0x7f], ULawToLinear[0x00], ULawToLinear[0x80])
	}
	if ALawToLinear[0xd5] != 8 || ALawToLinear[0x55] != -8 || ALawToLinear[0xaa] != 32256 || ALawToLinear[0x2a] != -32256 {
		t.Errorf("A-law table edges: %d %d %d %d", ALawToLinear[0xd5], ALawToLinear[0x55], ALawToLinear[0xaa], ALawToLinear[0x2a])
	}
	for v := -32768; v <= 32767; v += 7 {
		s := int16(v)
		for name, got := range map[string]int16{"ulaw": ULawToLinear[LinearToULaw(s)], "alaw": ALawToLinear[LinearToALaw(s)]} {
			// G.711 keeps about 12 bits: the error grows with the level.
			if tol := 40 + math.Abs(float64(v))/16; math.Abs(float64(got)-float64(v)) > tol {
				t.Fatalf("%s(%d) decodes to %d", name, v, got)
			}
		}
	}
}

// Every code decodes to a sample that encodes back to the same code, except
// mu-law's negative zero (0x7f), which is positive zero (0xff) again.
func TestG711RoundTrip(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		if got := LinearToULaw(ULawToLinear[b]); got != b && b != 0x7f {
			t.Errorf("mu-law %#02x -> %d -> %#02x", b, ULawToLinear[b], got)
		}
		if got := LinearToALaw(ALawToLinear[b]); got != b {
			t.Errorf("A-law %#02x -> %d -> %#02x", b, ALawToLinear[b], got)
		}
	}
}
