package recorder

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// BlobStore keeps recording files by key, e.g.
// "<client_id>/<yyyy>/<mm>/<call_id>.wav". The filesystem implementation is
// FSBlobs; an S3 one would buffer a recording locally while it is written
// and upload it when closed.
type BlobStore interface {
	// Create makes a new, empty blob to write a recording into; it fails
	// with an error wrapping fs.ErrExist if the key is taken.
	Create(key string) (BlobFile, error)
	// OpenFile opens an existing blob for repair after a crash.
	OpenFile(key string) (BlobFile, error)
	// Open opens a blob for reading; a missing one wraps fs.ErrNotExist.
	Open(key string) (Blob, error)
	// Delete removes a blob; deleting a missing one is not an error.
	Delete(key string) error
}

// BlobFile is a blob being written or repaired.
type BlobFile interface {
	io.Writer
	io.WriterAt
	io.ReaderAt
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	Close() error
}

// Blob is a stored blob opened for reading.
type Blob interface {
	io.ReadSeekCloser
	Size() int64
	ModTime() time.Time
}

// ErrBadKey means a blob key is not a clean relative path.
var ErrBadKey = errors.New("recorder: bad blob key")

// FSBlobs is a BlobStore in a directory (<data-dir>/recordings).
type FSBlobs struct {
	root string
}

// NewFSBlobs uses dir (created if missing) as the blob root.
func NewFSBlobs(dir string) (*FSBlobs, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("recorder: blob directory: %w", err)
	}
	return &FSBlobs{root: dir}, nil
}

// Root is the directory blobs live under.
func (b *FSBlobs) Root() string { return b.root }

func (b *FSBlobs) path(key string) (string, error) {
	if key == "" || !filepath.IsLocal(key) || strings.ContainsAny(key, "\\\x00") || filepath.Clean(key) != key {
		return "", fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	return filepath.Join(b.root, filepath.FromSlash(key)), nil
}

// Create makes the blob and its directories; the file is created with
// O_EXCL so two sessions never share one.
func (b *FSBlobs) Create(key string) (BlobFile, error) {
	p, err := b.path(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, err
	}
	return fsFile{f}, nil
}

// OpenFile opens an existing blob read-write.
func (b *FSBlobs) OpenFile(key string) (BlobFile, error) {
	p, err := b.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return fsFile{f}, nil
}

// Open opens a blob for reading.
func (b *FSBlobs) Open(key string) (Blob, error) {
	p, err := b.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fsBlob{File: f, size: st.Size(), mod: st.ModTime()}, nil
}

// OpenAudio is Open for the replay API (api.RecordingAudio).
func (b *FSBlobs) OpenAudio(key string) (io.ReadSeekCloser, error) { return b.Open(key) }

// Delete removes a blob.
func (b *FSBlobs) Delete(key string) error {
	p, err := b.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

type fsFile struct{ *os.File }

// Sync flushes the file's data (fdatasync): the size a recording grew to
// is all the metadata it needs.
func (f fsFile) Sync() error { return datasync(f.File) }

func (f fsFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

type fsBlob struct {
	*os.File
	size int64
	mod  time.Time
}

func (b fsBlob) Size() int64        { return b.size }
func (b fsBlob) ModTime() time.Time { return b.mod }
