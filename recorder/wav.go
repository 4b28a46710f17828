package recorder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The recording format: RIFF/WAVE, 16-bit linear PCM, two channels (left
// the client, right the manager), 8000 frames a second, a canonical 44-byte
// header in front of the samples.
const (
	SampleRate    = 8000
	channels      = 2
	bytesPerFrame = 2 * channels
	wavHeaderSize = 44
	// maxDataBytes keeps the RIFF sizes inside 32 bits (about 37 hours).
	maxDataBytes = 0xffffffff - wavHeaderSize - 8
	// unknownSize marks a header written before the length is known; a
	// file that still carries it was never closed in order.
	unknownSize = 0xffffffff
)

// ErrNotWAV means a file does not start with the header this recorder
// writes, so it cannot be repaired.
var ErrNotWAV = errors.New("recorder: not a recording WAV file")

// wavHeader is the header for dataLen bytes of samples; a negative dataLen
// writes the "length unknown" placeholder of a file still being recorded.
func wavHeader(dataLen int64) []byte {
	riff, data := uint32(unknownSize), uint32(unknownSize)
	if dataLen >= 0 {
		data = uint32(dataLen)
		riff = uint32(dataLen + wavHeaderSize - 8)
	}
	h := make([]byte, wavHeaderSize)
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], riff)
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16) // fmt chunk size
	binary.LittleEndian.PutUint16(h[20:], 1)  // PCM
	binary.LittleEndian.PutUint16(h[22:], channels)
	binary.LittleEndian.PutUint32(h[24:], SampleRate)
	binary.LittleEndian.PutUint32(h[28:], SampleRate*bytesPerFrame)
	binary.LittleEndian.PutUint16(h[32:], bytesPerFrame)
	binary.LittleEndian.PutUint16(h[34:], 16) // bits per sample
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], data)
	return h
}

// headerDataLen reads the data length a header of ours declares; unknown
// is true for the placeholder of an unfinished file.
func headerDataLen(h []byte) (n int64, unknown bool, err error) {
	if len(h) < wavHeaderSize {
		return 0, false, ErrNotWAV
	}
	want := wavHeader(0)
	// Everything but the two sizes must be exactly ours.
	if !bytes.Equal(h[0:4], want[0:4]) || !bytes.Equal(h[8:40], want[8:40]) {
		return 0, false, ErrNotWAV
	}
	data := binary.LittleEndian.Uint32(h[40:])
	if data == unknownSize {
		return 0, true, nil
	}
	return int64(data), false, nil
}

// repairWAV makes a recording file playable after its writer died: the
// samples on disk are kept up to the last whole frame, and the header is
// rewritten to say how many there are. It reports the data length and
// whether the file needed repair (an unfinished or inconsistent header).
func repairWAV(f BlobFile) (dataLen int64, repaired bool, err error) {
	size, err := f.Size()
	if err != nil {
		return 0, false, err
	}
	h := make([]byte, wavHeaderSize)
	if size < wavHeaderSize {
		// Died before the header reached the disk: an empty recording.
		if err := f.Truncate(0); err != nil {
			return 0, false, err
		}
		if _, err := f.WriteAt(wavHeader(0), 0); err != nil {
			return 0, false, err
		}
		return 0, true, f.Sync()
	}
	if _, err := f.ReadAt(h, 0); err != nil && !errors.Is(err, io.EOF) {
		return 0, false, err
	}
	declared, unknown, err := headerDataLen(h)
	if err != nil {
		return 0, false, err
	}
	onDisk := (size - wavHeaderSize) / bytesPerFrame * bytesPerFrame
	onDisk = min(onDisk, maxDataBytes/bytesPerFrame*bytesPerFrame)
	if !unknown && declared == onDisk && size == wavHeaderSize+onDisk {
		return onDisk, false, nil
	}
	if size != wavHeaderSize+onDisk {
		if err := f.Truncate(wavHeaderSize + onDisk); err != nil {
			return 0, false, fmt.Errorf("recorder: truncate to whole frames: %w", err)
		}
	}
	if _, err := f.WriteAt(wavHeader(onDisk), 0); err != nil {
		return 0, false, err
	}
	return onDisk, true, f.Sync()
}

// StereoPCM is a decoded recording: one sample slice per channel.
type StereoPCM struct {
	Left, Right []int16 // client, manager
}

// Duration is the length in seconds.
func (p StereoPCM) Duration() float64 { return float64(len(p.Left)) / SampleRate }

// DecodeWAV reads a 16-bit stereo 8 kHz WAV (as this recorder writes them)
// into its two channels, walking the RIFF chunks so that files written by
// other tools read too.
func DecodeWAV(b []byte) (StereoPCM, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return StereoPCM{}, ErrNotWAV
	}
	var fmtOK bool
	for off := 12; off+8 <= len(b); {
		id, size := string(b[off:off+4]), int(binary.LittleEndian.Uint32(b[off+4:]))
		body := b[off+8:]
		if size >= 0 && size <= len(body) {
			body = body[:size]
		}
		switch id {
		case "fmt ":
			if len(body) < 16 || binary.LittleEndian.Uint16(body[0:]) != 1 || binary.LittleEndian.Uint16(body[2:]) != channels ||
				binary.LittleEndian.Uint32(body[4:]) != SampleRate || binary.LittleEndian.Uint16(body[14:]) != 16 {
				return StereoPCM{}, fmt.Errorf("%w: not 16-bit stereo 8 kHz PCM", ErrNotWAV)
			}
			fmtOK = true
		case "data":
			if !fmtOK {
				return StereoPCM{}, fmt.Errorf("%w: data before fmt", ErrNotWAV)
			}
			frames := len(body) / bytesPerFrame
			p := StereoPCM{Left: make([]int16, frames), Right: make([]int16, frames)}
			for i := range frames {
				p.Left[i] = int16(binary.LittleEndian.Uint16(body[i*4:]))
				p.Right[i] = int16(binary.LittleEndian.Uint16(body[i*4+2:]))
			}
			return p, nil
		}
		off += 8 + size + size&1
		if size < 0 || off < 0 {
			break
		}
	}
	return StereoPCM{}, fmt.Errorf("%w: no data chunk", ErrNotWAV)
}
