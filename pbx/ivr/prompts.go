package ivr

import (
	"embed"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Prompt clips are 8 kHz mono 16-bit PCM WAV files, one per language and
// phrase: <lang>/<name>.wav, as in the embedded prompts directory (made by
// deploy/prompts.sh). A company replaces any of them with a directory of
// the same layout (--prompts-dir).

// The prompts the call flows use. Digits are the clips "0" to "9".
const (
	PromptClientCode   = "client_code"    // "Client code"
	PromptPress1       = "press_1"        // "Press 1 to accept."
	PromptEnterCode    = "enter_code"     // "Enter the client code, then hash."
	PromptWrongCode    = "wrong_code"     // "Wrong code."
	PromptGoodbye      = "goodbye"        // "Goodbye."
	PromptNotInService = "not_in_service" // "This number is no longer in service."
)

// DefaultLanguage is what Clip falls back to.
const DefaultLanguage = "en"

// maxPromptBytes bounds a prompt file: a minute of audio. A clip is held in
// memory for the life of the process.
const maxPromptBytes = 44 + 60*sampleRate*2

//go:embed prompts
var embedded embed.FS

// Prompts holds every clip by language and name. It is read-only once
// loaded and safe for concurrent use.
type Prompts struct {
	clips map[string]map[string][]int16
}

// promptNames are the clips every language has.
var promptNames = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
	PromptClientCode, PromptPress1, PromptEnterCode, PromptWrongCode, PromptGoodbye, PromptNotInService}

// LoadPrompts loads the embedded clips and, when dir is not "", lays the
// clips of dir over them: dir/<lang>/<name>.wav replaces that clip, a
// missing file keeps the embedded one, and a language directory the
// embedded set lacks adds a language (its missing clips fall back to
// English). A file that is no 8 kHz mono 16-bit PCM WAV, or a .wav file that
// names no prompt, is an error naming the file.
func LoadPrompts(dir string) (*Prompts, error) {
	p := &Prompts{clips: map[string]map[string][]int16{}}
	sub, err := fs.Sub(embedded, "prompts")
	if err != nil {
		return nil, err
	}
	if err := p.load(sub, "embedded prompts"); err != nil {
		return nil, err
	}
	if dir == "" {
		return p, nil
	}
	if err := p.load(os.DirFS(dir), dir); err != nil {
		return nil, err
	}
	return p, nil
}

// load reads fsys/<lang>/<name>.wav into p; where names fsys in errors.
func (p *Prompts) load(fsys fs.FS, where string) error {
	langs, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return fmt.Errorf("prompts %s: %w", where, err)
	}
	for _, l := range langs {
		if !l.IsDir() || !validLanguage(l.Name()) {
			continue
		}
		lang := l.Name()
		files, err := fs.ReadDir(fsys, lang)
		if err != nil {
			return fmt.Errorf("prompts %s: %w", where, err)
		}
		for _, f := range files {
			name, ok := strings.CutSuffix(f.Name(), ".wav")
			if !ok || f.IsDir() {
				continue
			}
			file := path.Join(where, lang, f.Name())
			if !knownPrompt(name) {
				return fmt.Errorf("%s: no prompt is called %q", file, name)
			}
			samples, err := readPrompt(fsys, path.Join(lang, f.Name()))
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if p.clips[lang] == nil {
				p.clips[lang] = map[string][]int16{}
			}
			p.clips[lang][name] = samples
		}
	}
	return nil
}

// validLanguage accepts a language directory name such as "en" or "ru".
func validLanguage(s string) bool {
	if len(s) < 2 || len(s) > 3 {
		return false
	}
	for _, r := range s {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	return true
}

func knownPrompt(name string) bool {
	for _, n := range promptNames {
		if n == name {
			return true
		}
	}
	return false
}

// readPrompt reads one WAV file, refusing anything over maxPromptBytes.
func readPrompt(fsys fs.FS, name string) ([]int16, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxPromptBytes {
		return nil, fmt.Errorf("%w: longer than a minute", ErrBadPrompt)
	}
	b := make([]byte, st.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return parseWAV(b)
}

// parseWAV returns the samples of an 8 kHz mono 16-bit PCM WAV file. The
// data chunk must fit in the file.
func parseWAV(b []byte) ([]int16, error) {
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, fmt.Errorf("%w: no RIFF/WAVE header", ErrBadPrompt)
	}
	format := false
	for rest := b[12:]; len(rest) >= 8; {
		id, size := string(rest[:4]), binary.LittleEndian.Uint32(rest[4:8])
		rest = rest[8:]
		if uint64(size) > uint64(len(rest)) {
			return nil, fmt.Errorf("%w: chunk %q runs past the end", ErrBadPrompt, id)
		}
		body := rest[:size]
		switch id {
		case "fmt ":
			if len(body) < 16 ||
				binary.LittleEndian.Uint16(body[0:]) != 1 || // PCM
				binary.LittleEndian.Uint16(body[2:]) != 1 || // mono
				binary.LittleEndian.Uint32(body[4:]) != sampleRate ||
				binary.LittleEndian.Uint16(body[14:]) != 16 {
				return nil, fmt.Errorf("%w: wrong format", ErrBadPrompt)
			}
			format = true
		case "data":
			if !format {
				return nil, fmt.Errorf("%w: data before fmt", ErrBadPrompt)
			}
			samples := make([]int16, len(body)/2)
			for i := range samples {
				samples[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			return samples, nil
		}
		rest = rest[min(uint64(len(rest)), uint64(size)+uint64(size%2)):]
	}
	return nil, fmt.Errorf("%w: no data chunk", ErrBadPrompt)
}

// Clip is the named clip in lang: an unknown language is English, and a
// clip a language lacks is the English one. An unknown name is nil
// (silence). The slice is shared: callers must not modify it.
func (p *Prompts) Clip(lang, name string) []int16 {
	if c, ok := p.clips[lang][name]; ok {
		return c
	}
	return p.clips[DefaultLanguage][name]
}

// Digits is digits spoken one by one in lang ("12345678" → the clips "1",
// "2", …); characters other than 0-9 are skipped.
func (p *Prompts) Digits(lang, digits string) [][]int16 {
	clips := make([][]int16, 0, len(digits))
	for _, r := range digits {
		if r >= '0' && r <= '9' {
			clips = append(clips, p.Clip(lang, string(r)))
		}
	}
	return clips
}
