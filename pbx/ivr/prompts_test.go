package ivr

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/audio"
)

func TestEmbeddedPrompts(t *testing.T) {
	p, err := LoadPrompts("")
	if err != nil {
		t.Fatal(err)
	}
	for _, lang := range []string{"en", "ru"} {
		for _, name := range promptNames {
			c := p.clips[lang][name]
			// Trimmed speech: present, short, starting and ending near the
			// voice (no long silence to wait through).
			if len(c) < sampleRate/10 || len(c) > 4*sampleRate {
				t.Errorf("%s/%s: %d samples", lang, name, len(c))
				continue
			}
			if quiet := leadingQuiet(c); quiet > 100*time.Millisecond {
				t.Errorf("%s/%s starts with %v of silence", lang, name, quiet)
			}
		}
	}
	if slices.Equal(p.Clip("en", "1"), p.Clip("ru", "1")) {
		t.Fatal("the Russian 1 is the English one")
	}
	if !slices.Equal(p.Clip("de", PromptGoodbye), p.Clip("en", PromptGoodbye)) {
		t.Fatal("an unknown language is not English")
	}
	if p.Clip("en", "no such prompt") != nil {
		t.Fatal("an unknown prompt has audio")
	}
	got := p.Digits("ru", "4-0 7")
	want := [][]int16{p.Clip("ru", "4"), p.Clip("ru", "0"), p.Clip("ru", "7")}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatal("Digits does not speak 4, 0, 7")
	}
}

// leadingQuiet is how long s stays under -40 dBFS from its start.
func leadingQuiet(s []int16) time.Duration {
	i := slices.IndexFunc(s, func(v int16) bool { return v > 328 || v < -328 })
	return time.Duration(i) * time.Second / sampleRate
}

// wav is an 8 kHz-style WAV file with the given format fields.
func wav(format, channels uint16, rate uint32, bits uint16, samples []int16) []byte {
	data := make([]byte, 2*len(samples))
	for i, v := range samples {
		binary.LittleEndian.PutUint16(data[2*i:], uint16(v))
	}
	b := []byte("RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00")
	b = binary.LittleEndian.AppendUint16(b, format)
	b = binary.LittleEndian.AppendUint16(b, channels)
	b = binary.LittleEndian.AppendUint32(b, rate)
	b = binary.LittleEndian.AppendUint32(b, rate*uint32(channels)*uint32(bits)/8)
	b = binary.LittleEndian.AppendUint16(b, channels*bits/8)
	b = binary.LittleEndian.AppendUint16(b, bits)
	b = append(b, "LIST\x03\x00\x00\x00abc\x00"...) // an odd chunk before the data, padded
	b = append(b, "data"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPromptsDirOverrides(t *testing.T) {
	dir := t.TempDir()
	mine := Beep(500, 300*time.Millisecond)
	writeFile(t, filepath.Join(dir, "ru", "goodbye.wav"), wav(1, 1, 8000, 16, mine))
	writeFile(t, filepath.Join(dir, "de", "press_1.wav"), wav(1, 1, 8000, 16, mine))
	writeFile(t, filepath.Join(dir, "ru", "README.txt"), []byte("not a prompt"))
	p, err := LoadPrompts(dir)
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := LoadPrompts("")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !slices.Equal(p.Clip("ru", PromptGoodbye), mine):
		t.Fatal("ru/goodbye.wav did not replace the embedded clip")
	case !slices.Equal(p.Clip("ru", PromptWrongCode), embedded.Clip("ru", PromptWrongCode)):
		t.Fatal("a clip missing from the directory is not the embedded one")
	case !slices.Equal(p.Clip("de", PromptPress1), mine):
		t.Fatal("a new language's clip is not used")
	case !slices.Equal(p.Clip("de", "7"), embedded.Clip("en", "7")):
		t.Fatal("a new language's missing clip is not English")
	case slices.Equal(embedded.Clip("ru", PromptGoodbye), mine):
		t.Fatal("the override leaked into another Prompts")
	}
}

func TestPromptsDirRefusesBadFiles(t *testing.T) {
	good := wav(1, 1, 8000, 16, Beep(500, 100*time.Millisecond))
	truncated := good[:len(good)-10]
	cases := map[string]struct {
		file string
		body []byte
		is   error
	}{
		"16 kHz":        {"en/1.wav", wav(1, 1, 16000, 16, make([]int16, 100)), ErrBadPrompt},
		"stereo":        {"en/1.wav", wav(1, 2, 8000, 16, make([]int16, 100)), ErrBadPrompt},
		"8-bit":         {"en/1.wav", wav(1, 1, 8000, 8, make([]int16, 100)), ErrBadPrompt},
		"float":         {"en/1.wav", wav(3, 1, 8000, 16, make([]int16, 100)), ErrBadPrompt},
		"not RIFF":      {"ru/goodbye.wav", []byte("ID3\x03 an mp3 file, say"), ErrBadPrompt},
		"truncated":     {"ru/goodbye.wav", truncated, ErrBadPrompt},
		"empty":         {"en/press_1.wav", nil, ErrBadPrompt},
		"over a minute": {"en/press_1.wav", wav(1, 1, 8000, 16, make([]int16, 61*sampleRate)), ErrBadPrompt},
		"unknown name":  {"en/goodby.wav", good, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, tc.file), tc.body)
			p, err := LoadPrompts(dir)
			if err == nil {
				t.Fatalf("loaded: %v", p != nil)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.file)) {
				t.Fatalf("the error does not name the file: %v", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
		})
	}
	if _, err := LoadPrompts(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing --prompts-dir loaded")
	}
}

func TestTones(t *testing.T) {
	r := Ringback(11 * time.Second)
	if len(r) != 11*sampleRate {
		t.Fatalf("ringback of %d samples", len(r))
	}
	// 1 s of 425 Hz, 4 s of silence, and again.
	for _, sec := range []int{0, 5, 10} {
		on := r[sec*sampleRate+100 : (sec+1)*sampleRate-100]
		if share := audio.ToneShare(on, 425); share < 0.95 {
			t.Errorf("second %d of ringback: 425 Hz share %.2f", sec, share)
		}
	}
	for _, sec := range []int{1, 2, 3, 4, 6, 9} {
		if slices.ContainsFunc(r[sec*sampleRate:(sec+1)*sampleRate], func(v int16) bool { return v != 0 }) {
			t.Errorf("second %d of ringback is not silent", sec)
		}
	}
	if share := audio.ToneShare(Beep(1000, time.Second), 1000); share < 0.95 {
		t.Errorf("beep: 1000 Hz share %.2f", share)
	}
	if DTMF('x', time.Second) != nil || len(DTMF('#', 100*time.Millisecond)) != 800 {
		t.Error("DTMF lengths")
	}
	if len(Silence(-time.Second)) != 0 {
		t.Error("negative silence")
	}
}
