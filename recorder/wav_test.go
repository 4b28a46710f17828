package recorder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

func TestWAVRepair(t *testing.T) {
	blobs, err := NewFSBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	write := func(key string, b []byte) {
		t.Helper()
		f, err := blobs.Create(key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	repair := func(key string) (int64, bool, error) {
		t.Helper()
		f, err := blobs.OpenFile(key)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return repairWAV(f)
	}
	samples := make([]byte, 4000*bytesPerFrame+3) // died in the middle of a frame
	for i := 0; i+1 < len(samples); i += 2 {
		binary.LittleEndian.PutUint16(samples[i:], uint16(i))
	}

	t.Run("unfinished file", func(t *testing.T) {
		write("a/unfinished.wav", append(wavHeader(-1), samples...))
		n, repaired, err := repair("a/unfinished.wav")
		if err != nil || !repaired || n != 4000*bytesPerFrame {
			t.Fatalf("repair: %d %v %v", n, repaired, err)
		}
		raw, _ := os.ReadFile(filepath.Join(blobs.Root(), "a/unfinished.wav"))
		if len(raw) != wavHeaderSize+4000*bytesPerFrame || !bytes.Equal(raw[:wavHeaderSize], wavHeader(n)) {
			t.Fatalf("file is %d bytes, header %x", len(raw), raw[:wavHeaderSize])
		}
		p, err := DecodeWAV(raw)
		if err != nil || len(p.Left) != 4000 || p.Left[1] != 4 || p.Right[1] != 6 {
			t.Fatalf("decoded %d frames, %v", len(p.Left), err)
		}
		if n2, again, err := repair("a/unfinished.wav"); err != nil || again || n2 != n {
			t.Fatalf("second repair: %d %v %v", n2, again, err)
		}
		soxReads(t, filepath.Join(blobs.Root(), "a/unfinished.wav"), "0.5")
	})
	t.Run("header with a wrong length", func(t *testing.T) {
		write("a/short-header.wav", append(wavHeader(40), samples[:400]...))
		if n, repaired, err := repair("a/short-header.wav"); err != nil || !repaired || n != 400 {
			t.Fatalf("repair: %d %v %v", n, repaired, err)
		}
	})
	t.Run("died before the header", func(t *testing.T) {
		write("a/empty.wav", []byte("RIF"))
		if n, repaired, err := repair("a/empty.wav"); err != nil || !repaired || n != 0 {
			t.Fatalf("repair: %d %v %v", n, repaired, err)
		}
		soxReads(t, filepath.Join(blobs.Root(), "a/empty.wav"), "")
	})
	t.Run("not ours", func(t *testing.T) {
		write("a/other.wav", append([]byte("RIFF\x00\x00\x00\x00WAVEfmt "), make([]byte, 100)...))
		if _, _, err := repair("a/other.wav"); !errors.Is(err, ErrNotWAV) {
			t.Fatalf("repair: %v", err)
		}
	})
}

// soxReads checks with sox --i that a file is a readable stereo 8 kHz WAV
// of the given duration in seconds ("" for an empty one).
func soxReads(t *testing.T, path, seconds string) {
	t.Helper()
	sox := testenv.Have(t, "sox")
	if sox == "" {
		return
	}
	out, err := exec.Command(sox, "--i", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sox --i: %v\n%s", err, out)
	}
	want := []string{"Channels       : 2", "Sample Rate    : 8000", "16-bit"}
	if seconds != "" { // sox shows no duration for an empty file
		want = append(want, "Duration       : 00:00:0"+seconds)
	}
	for _, want := range want {
		if !strings.Contains(string(out), want) {
			t.Fatalf("sox --i lacks %q:\n%s", want, out)
		}
	}
}

func TestFSBlobs(t *testing.T) {
	blobs, _ := NewFSBlobs(t.TempDir())
	for _, key := range []string{"", "../x.wav", "/etc/passwd", "a/../../b.wav", "a//b.wav", "a\\b.wav", "a/./b.wav"} {
		if _, err := blobs.Create(key); !errors.Is(err, ErrBadKey) {
			t.Errorf("key %q: %v", key, err)
		}
		if err := blobs.Delete(key); !errors.Is(err, ErrBadKey) {
			t.Errorf("delete %q: %v", key, err)
		}
	}
	f, err := blobs.Create("c/2026/01/x.wav")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := blobs.Create("c/2026/01/x.wav"); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second create: %v", err)
	}
	if err := blobs.Delete("c/2026/01/x.wav"); err != nil {
		t.Fatal(err)
	}
	if err := blobs.Delete("c/2026/01/x.wav"); err != nil {
		t.Fatalf("deleting a missing blob: %v", err)
	}
	if _, err := blobs.Open("c/2026/01/x.wav"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open deleted: %v", err)
	}
}
