package recorder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/maskpbx/maskpbx/storage"
)

// The journal is the recorder's memory across a crash, on the same disk as
// the audio: a record for every recording that is not yet safely in
// Postgres. An entry is durable (synced) before the recording takes audio,
// so a recording whose process dies mid-call is found again at the next
// start, even if the database was away the whole time.
//
// It is one append-only log (journal.log) of JSON lines: an entry, or a
// tombstone ("done") once the recording is committed; the last line for a
// recording wins. Appends that want to be durable share fsyncs (group
// commit): at hundreds of recordings a second a file, a rename and two
// fsyncs per entry cost more than the recording itself. The log is
// rewritten with only the live entries when it has grown (compact). A torn
// last line (a crash mid-append) is skipped. Entries of the older layout,
// one <id>.json file each, are still read and removed.
const (
	stageRecording = "recording" // audio is being written; a crash leaves it unfinished
	stageFinal     = "final"     // the file is closed and the row is complete; only saving is left
	stageDone      = "done"      // committed: a tombstone in the log

	journalLog = "journal.log"
	// compactAfter is how much the log may grow before it is rewritten.
	compactAfter = 8 << 20
)

type journalEntry struct {
	Stage     string            `json:"stage"`
	Recording storage.Recording `json:"recording"`
}

// tombstone is the line that ends an entry.
type tombstone struct {
	Stage string `json:"stage"`
	ID    string `json:"id"`
}

type journal struct {
	dir string

	mu     sync.Mutex // guards f, size, seq, live and compaction
	f      *os.File
	size   int64
	seq    uint64          // lines appended
	live   map[string]bool // ids with an entry and no tombstone, for compaction
	legacy bool            // <id>.json files may exist

	syncMu sync.Mutex    // one fsync at a time
	synced atomic.Uint64 // lines known to be on disk
}

func newJournal(dir string) (*journal, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("recorder: journal directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, journalLog), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("recorder: journal: %w", err)
	}
	size, err := cutTornLine(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("recorder: journal: %w", err)
	}
	j := &journal{dir: dir, f: f, size: size, live: map[string]bool{}, legacy: true}
	entries, _, err := j.list()
	if err != nil {
		f.Close()
		return nil, err
	}
	for _, e := range entries {
		j.live[e.Recording.ID] = true
	}
	return j, syncDir(dir)
}

// cutTornLine drops a last line without its newline: an append cut short
// by a crash. It returns the size left.
func cutTornLine(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, err
	}
	tail := make([]byte, min(st.Size(), 64<<10))
	if _, err := f.ReadAt(tail, st.Size()-int64(len(tail))); err != nil {
		return 0, err
	}
	if tail[len(tail)-1] == '\n' {
		return st.Size(), nil
	}
	keep := st.Size() - int64(len(tail)) + int64(bytes.LastIndexByte(tail, '\n')+1)
	if err := f.Truncate(keep); err != nil {
		return 0, err
	}
	return keep, datasync(f)
}

// write records an entry (replacing the recording's previous one) and
// returns once it is on disk.
func (j *journal) write(e journalEntry) error {
	if !uuidRE.MatchString(e.Recording.ID) {
		return errors.New("recorder: journal entry without a recording id")
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	seq, err := j.append(append(raw, '\n'), e.Recording.ID, true)
	if err != nil {
		return err
	}
	return j.sync(seq)
}

// remove ends a recording's entry. It is not synced: a tombstone lost in a
// crash makes the next start commit the recording again, which is
// idempotent.
func (j *journal) remove(id string) error {
	raw, err := json.Marshal(tombstone{Stage: stageDone, ID: id})
	if err != nil {
		return err
	}
	if _, err := j.append(append(raw, '\n'), id, false); err != nil {
		return err
	}
	if j.legacy {
		if err := os.Remove(filepath.Join(j.dir, id+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (j *journal) append(line []byte, id string, live bool) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(line); err != nil {
		return 0, err
	}
	j.size += int64(len(line))
	j.seq++
	if live {
		j.live[id] = true
	} else {
		delete(j.live, id)
	}
	if j.size > compactAfter && len(j.live) < 100_000 {
		if err := j.compact(); err != nil {
			return j.seq, fmt.Errorf("recorder: journal compaction: %w", err)
		}
	}
	return j.seq, nil
}

// sync returns once every line up to seq is on disk; one fsync serves every
// writer that appended before it started.
func (j *journal) sync(seq uint64) error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if j.synced.Load() >= seq {
		return nil
	}
	j.mu.Lock()
	f, upTo := j.f, j.seq
	j.mu.Unlock()
	if err := datasync(f); err != nil {
		return err
	}
	j.synced.Store(upTo)
	return nil
}

// compact rewrites the log with the live entries only. j.mu is held.
func (j *journal) compact() error {
	entries, _, err := j.readLog()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(j.dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	w := bufio.NewWriter(tmp)
	for _, e := range entries {
		raw, err := json.Marshal(e)
		if err != nil {
			tmp.Close()
			return err
		}
		w.Write(raw)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	st, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(j.dir, journalLog)); err != nil {
		tmp.Close()
		return err
	}
	if err := syncDir(j.dir); err != nil {
		tmp.Close()
		return err
	}
	// Appends go to the new file from now on; O_APPEND for them.
	tmp.Close()
	f, err := os.OpenFile(filepath.Join(j.dir, journalLog), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	j.f.Close()
	j.f, j.size = f, st.Size()
	j.synced.Store(j.seq)
	return nil
}

// list returns every live entry; unreadable ones are reported by name (a
// file, or the log and its line) so an operator can look at them, and
// skipped.
func (j *journal) list() (entries []journalEntry, bad []string, err error) {
	j.mu.Lock()
	entries, bad, err = j.readLog()
	j.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	if !j.legacy {
		return entries, bad, nil
	}
	names, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, nil, err
	}
	legacy := false
	for _, n := range names {
		if n.IsDir() || !strings.HasSuffix(n.Name(), ".json") || strings.HasPrefix(n.Name(), ".") {
			continue
		}
		legacy = true
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
	if !legacy {
		j.legacy = false // nothing of the old layout is left; it is never written again
	}
	return entries, bad, nil
}

// readLog folds the log into its live entries, in the order first seen.
// j.mu is held.
func (j *journal) readLog() (entries []journalEntry, bad []string, err error) {
	raw, err := os.ReadFile(filepath.Join(j.dir, journalLog))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	byID := map[string]int{}
	var all []journalEntry
	dead := map[int]bool{}
	for n, line := range bytes.Split(raw, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e journalEntry
		if json.Unmarshal(line, &e) != nil {
			bad = append(bad, fmt.Sprintf("%s:%d", journalLog, n+1))
			continue
		}
		if e.Stage == stageDone {
			var t tombstone
			if json.Unmarshal(line, &t) == nil {
				if i, ok := byID[t.ID]; ok {
					dead[i] = true
					delete(byID, t.ID)
				}
			}
			continue
		}
		if !uuidRE.MatchString(e.Recording.ID) || (e.Stage != stageRecording && e.Stage != stageFinal) {
			bad = append(bad, fmt.Sprintf("%s:%d", journalLog, n+1))
			continue
		}
		if i, ok := byID[e.Recording.ID]; ok {
			all[i] = e
			continue
		}
		byID[e.Recording.ID] = len(all)
		all = append(all, e)
	}
	for i, e := range all {
		if !dead[i] {
			entries = append(entries, e)
		}
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
