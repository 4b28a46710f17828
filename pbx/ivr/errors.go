package ivr

import "errors"

// Errors are sentinels for errors.Is. Their text never carries audio or
// packet data.
var (
	// ErrStopped is what Play and Digit return once the session is stopped.
	ErrStopped = errors.New("ivr: session stopped")

	// ErrBadCodec reports a Start with a codec other than PCMU or PCMA.
	ErrBadCodec = errors.New("ivr: codec is not G.711")

	// ErrMedia reports that the leg's port failed or was closed (the call
	// ended): no more digits will come and nothing more can be played.
	ErrMedia = errors.New("ivr: media port failed")

	// ErrBadPrompt reports a prompt file that is not an 8 kHz mono 16-bit
	// PCM WAV; the error names the file.
	ErrBadPrompt = errors.New("ivr: prompt is not an 8 kHz mono 16-bit PCM WAV")
)
