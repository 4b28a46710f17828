package testenv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"testing"
	"time"
)

// wavRate is the sample rate of the WAV files a softphone plays and records
// here: the rate of G.711, so nothing is resampled on the way.
const wavRate = 8000

// WriteToneWAV writes d of a freq Hz sine as an 8 kHz mono 16-bit WAV file,
// the microphone a softphone under test sends.
func WriteToneWAV(t testing.TB, path string, freq float64, d time.Duration) {
	t.Helper()
	n := int(d.Seconds() * wavRate)
	data := make([]byte, 2*n)
	for i := range n {
		v := int16(8000 * math.Sin(2*math.Pi*freq*float64(i)/wavRate))
		binary.LittleEndian.PutUint16(data[2*i:], uint16(v))
	}
	hdr := make([]byte, 44)
	copy(hdr, "RIFF")
	binary.LittleEndian.PutUint32(hdr[4:], uint32(36+len(data)))
	copy(hdr[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(hdr[16:], 16)
	binary.LittleEndian.PutUint16(hdr[20:], 1) // PCM
	binary.LittleEndian.PutUint16(hdr[22:], 1) // mono
	binary.LittleEndian.PutUint32(hdr[24:], wavRate)
	binary.LittleEndian.PutUint32(hdr[28:], 2*wavRate)
	binary.LittleEndian.PutUint16(hdr[32:], 2)
	binary.LittleEndian.PutUint16(hdr[34:], 16)
	copy(hdr[36:], "data")
	binary.LittleEndian.PutUint32(hdr[40:], uint32(len(data)))
	if err := os.WriteFile(path, append(hdr, data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

var errNotPCM16 = errors.New("not a 16-bit PCM WAV file")

// ReadWAV returns the samples of the first channel of a 16-bit PCM WAV file
// and its sample rate. The data chunk is read to the end of the file: a
// recorder that appends to a WAV file fills in the size only when done.
func ReadWAV(path string) ([]int16, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	return decodeWAV(path, b)
}

func decodeWAV(path string, b []byte) ([]int16, int, error) {
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, 0, fmt.Errorf("%s: %w", path, errNotPCM16)
	}
	var channels, bits, rate int
	for p := 12; p+8 <= len(b); {
		id, size := string(b[p:p+4]), int(binary.LittleEndian.Uint32(b[p+4:]))
		body := b[p+8:]
		switch id {
		case "fmt ":
			if len(body) < 16 {
				return nil, 0, fmt.Errorf("%s: %w", path, errNotPCM16)
			}
			channels = int(binary.LittleEndian.Uint16(body[2:]))
			rate = int(binary.LittleEndian.Uint32(body[4:]))
			bits = int(binary.LittleEndian.Uint16(body[14:]))
		case "data":
			if bits != 16 || channels < 1 {
				return nil, 0, fmt.Errorf("%s: %d bits, %d channels: %w", path, bits, channels, errNotPCM16)
			}
			return pcm16(body, channels), rate, nil
		}
		p += 8 + size + size%2
	}
	return nil, 0, fmt.Errorf("%s: no data chunk: %w", path, errNotPCM16)
}

// pcm16 returns the first channel of interleaved 16-bit little-endian
// samples.
func pcm16(b []byte, channels int) []int16 {
	frame := 2 * channels
	out := make([]int16, len(b)/frame)
	for i := range out {
		out[i] = int16(binary.LittleEndian.Uint16(b[i*frame:]))
	}
	return out
}
