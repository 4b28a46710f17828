package storage

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// FileAnchor is an AuditAnchor kept in a file, e.g. in the data dir next to
// the keys, out of reach of anyone who has only the database. Share one
// FileAnchor between the Stores of a process.
type FileAnchor struct {
	path string
	mu   sync.Mutex // serialises Advance within the process
}

// NewFileAnchor anchors the audit chain's head in the file at path; the
// file and its directory are created on the first Advance.
func NewFileAnchor(path string) *FileAnchor { return &FileAnchor{path: path} }

// Load implements AuditAnchor.
func (a *FileAnchor) Load() (AuditHead, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.load()
}

func (a *FileAnchor) load() (AuditHead, error) {
	b, err := os.ReadFile(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return AuditHead{}, nil
	}
	if err != nil {
		return AuditHead{}, err
	}
	seq, hash, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	h := AuditHead{}
	if ok {
		h.Seq, err = strconv.ParseInt(seq, 10, 64)
		if err == nil {
			h.Hash, err = hex.DecodeString(hash)
		}
	}
	if !ok || err != nil || h.Seq <= 0 {
		return AuditHead{}, fmt.Errorf("%s: unreadable audit anchor", a.path)
	}
	return h, nil
}

// Advance implements AuditAnchor: the file is replaced atomically, and only
// by a newer head.
func (a *FileAnchor) Advance(h AuditHead) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, err := a.load()
	if err != nil {
		return err
	}
	if h.Seq <= cur.Seq {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(a.path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(a.path), ".audit-head-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	_, err = fmt.Fprintf(f, "%d %s\n", h.Seq, hex.EncodeToString(h.Hash))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), a.path)
}
