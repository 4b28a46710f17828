package pbx

import "github.com/maskpbx/maskpbx/pbx/media"

// pickSame returns the entries of offered that name the same codecs as
// chosen (keeping offered's payload types).
func pickSame(offered, chosen []media.Codec) []media.Codec {
	var out []media.Codec
	for _, ch := range chosen {
		for _, o := range offered {
			if o.Name == ch.Name && o.ClockRate == ch.ClockRate {
				out = append(out, o)
				break
			}
		}
	}
	return out
}

// firstAudioAndEvents keeps the first audio codec and telephone-event.
func firstAudioAndEvents(offered []media.Codec) []media.Codec {
	var out []media.Codec
	audio := false
	for _, c := range offered {
		if c.IsAudio() {
			if audio {
				continue
			}
			audio = true
		}
		out = append(out, c)
	}
	return out
}
