package recorder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/maskpbx/maskpbx/storage"
)

// The journal is the recorder's memory across a crash, on the same disk as
// the audio: one small file per recording that is not yet safely in
// Postgres. It is written (and synced) before the INVITE is answered, so a
// recording whose process dies mid-call is found again at the next start,
// even if the database was away the whole time.
const (
	stageRecording = "recording" // audio is being written; a crash leaves it unfinished
	stageFinal     = "final"     // the file is closed and the row is complete; only saving is left
)

type journalEntry struct {
	Stage     string            `json:"stage"`
	Recording storage.Recording `json:"recording"`
}

type journal struct{ dir string }

func newJournal(dir string) (journal, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return journal{}, fmt.Errorf("recorder: journal directory: %w", err)
	}
	return journal{dir: dir}, nil
}

func (j journal) path(id string) string { return filepath.Join(j.dir, id+".json") }

// write replaces a recording's entry atomically: a crash leaves the old
// entry or the new one, never half of one.
func (j journal) write(e journalEntry) error {
	if !uuidRE.MatchString(e.Recording.ID) {
		return errors.New("recorder: journal entry without a recording id")
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(j.dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), j.path(e.Recording.ID)); err != nil {
		return err
	}
	return syncDir(j.dir)
}

func (j journal) remove(id string) error {
	if err := os.Remove(j.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// list returns every entry; unreadable ones are reported by name so an
// operator can look at them, and skipped.
func (j journal) list() (entries []journalEntry, bad []string, err error) {
	names, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range names {
		if n.IsDir() || !strings.HasSuffix(n.Name(), ".json") || strings.HasPrefix(n.Name(), ".") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(j.dir, n.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // its recording finished between ReadDir and now
		}
		if err != nil {
			bad = append(bad, n.Name())
			continue
		}
		var e journalEntry
		if json.Unmarshal(raw, &e) != nil || e.Recording.ID+".json" != n.Name() ||
			(e.Stage != stageRecording && e.Stage != stageFinal) {
			bad = append(bad, n.Name())
			continue
		}
		entries = append(entries, e)
	}
	return entries, bad, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
