package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/audio"
)

func TestWAV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tone.wav")
	WriteToneWAV(t, path, 440, time.Second)
	s, rate, err := ReadWAV(path)
	if err != nil {
		t.Fatal(err)
	}
	if rate != 8000 || len(s) != 8000 {
		t.Fatalf("read %d samples at %d Hz, want 8000 at 8000", len(s), rate)
	}
	if share := audio.ToneShare(s, 440); share < 0.9 {
		t.Errorf("440 Hz is %.2f of the tone written", share)
	}

	t.Run("samples appended past the data size are read", func(t *testing.T) {
		raw, _ := os.ReadFile(path)
		if err := os.WriteFile(path, append(raw, make([]byte, 800)...), 0o644); err != nil {
			t.Fatal(err)
		}
		if s, _, err := ReadWAV(path); err != nil || len(s) != 8400 {
			t.Fatalf("read %d samples (%v), want 8400", len(s), err)
		}
	})

	t.Run("not a WAV file", func(t *testing.T) {
		if err := os.WriteFile(path, make([]byte, 100), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadWAV(path); err == nil {
			t.Fatal("read 100 zero bytes as a WAV file")
		}
	})
}
