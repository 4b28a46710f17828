package audio

// G.711 (ITU-T G.711) decoding is by table: one lookup per sample keeps the
// per-packet work of a thousand recorded calls small.

// ULawToLinear and ALawToLinear decode a PCMU or PCMA byte to 16-bit linear
// PCM when indexed by it. They are shared tables: read them, never write.
var (
	ULawToLinear = decodeTable(ulawToLinear)
	ALawToLinear = decodeTable(alawToLinear)
)

func decodeTable(f func(byte) int16) *[256]int16 {
	var t [256]int16
	for i := range t {
		t[i] = f(byte(i))
	}
	return &t
}

// ulawToLinear decodes one mu-law sample (PCMU) to 16-bit linear PCM.
func ulawToLinear(u byte) int16 {
	u = ^u
	t := (int(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

// alawToLinear decodes one A-law sample (PCMA) to 16-bit linear PCM.
func alawToLinear(a byte) int16 {
	a ^= 0x55
	t := int(a&0x0f) << 4
	seg := (a & 0x70) >> 4
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}

// LinearToULaw encodes one sample as mu-law (PCMU).
func LinearToULaw(s int16) byte {
	const bias, clip = 0x84, 32635
	sign := byte(0)
	v := int(s)
	if v < 0 {
		v, sign = -v, 0x80
	}
	v = min(v, clip) + bias
	exp := 7
	for mask := 0x4000; v&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := (v >> (exp + 3)) & 0x0f
	return ^(sign | byte(exp<<4) | byte(mant))
}

// LinearToALaw encodes one sample as A-law (PCMA).
func LinearToALaw(s int16) byte {
	segEnd := [8]int{0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff}
	v := int(s) >> 3
	mask := byte(0xd5)
	if v < 0 {
		mask, v = 0x55, -v-1
	}
	seg := 0
	for seg < 8 && v > segEnd[seg] {
		seg++
	}
	if seg == 8 {
		return 0x7f ^ mask
	}
	a := byte(seg << 4)
	if seg < 2 {
		a |= byte(v>>1) & 0x0f
	} else {
		a |= byte(v>>seg) & 0x0f
	}
	return a ^ mask
}
