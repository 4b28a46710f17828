package recorder

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/jsretry"
)

// RecordingsBucket is the JetStream Object Store bucket recordings live in
// when --recordings-url is jetstream: (the NATS users' permissions name it).
const RecordingsBucket = "RECORDINGS"

// DefaultPartInterval is how often the audio of a recording under way is
// copied to the object store as a part: a node's death loses at most this
// much plus one sync interval.
const DefaultPartInterval = 4 * time.Second

// Timeouts of object store operations: a part is small, a complete
// recording may be hundreds of megabytes.
const (
	checkTimeout    = time.Second // a new recording's key, before it starts
	partTimeout     = 3 * time.Second
	partBackoff     = 30 * time.Second // after a part the bucket did not take
	completeTimeout = 5 * time.Minute
	readTimeout     = time.Hour // a whole replay
)

// ObjectBlobs is a BlobStore in a JetStream Object Store bucket, shared by
// every node. A recording is written locally as with FSBlobs (under
// <data-dir>/recordings, so the crash journal and repair work the same);
// while it grows, every PartInterval (at a Sync) the bytes not yet copied
// go to the bucket as the next part object, "<key>.part-NNNN"; at Close
// the complete WAV is stored under its key, the parts and the local file
// removed. A recording whose node died is left as parts: OpenFile (and so
// RecoverPartial) puts them together again, on any node.
type ObjectBlobs struct {
	local        *FSBlobs
	obs          jetstream.ObjectStore
	stream       jetstream.Stream // the bucket's, OBJ_<bucket>
	bucket       string
	storeTimeout time.Duration // a try to store a complete recording, plus its size at 5 MB/s
	PartInterval time.Duration
	logger       *zap.Logger
}

// OpenObjectBlobs opens (creating it if needed, with replicas) the bucket,
// writing recordings under way into localDir.
func OpenObjectBlobs(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, localDir string,
	logger *zap.Logger) (*ObjectBlobs, error) {
	local, err := NewFSBlobs(localDir)
	if err != nil {
		return nil, err
	}
	var obs jetstream.ObjectStore
	var stream jetstream.Stream
	err = jsretry.Do(ctx, func(ctx context.Context) (err error) {
		obs, err = js.ObjectStore(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			obs, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket,
				Description: "maskpbx: recording audio", Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || errors.Is(err, jetstream.ErrBucketExists) {
				obs, err = js.ObjectStore(ctx, bucket) // another node made it first
			}
		}
		return err
	})
	if err == nil {
		stream, err = jsretry.Stream(ctx, js, "OBJ_"+bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("recorder: object store %s: %w", bucket, err)
	}
	return &ObjectBlobs{local: local, obs: obs, stream: stream, bucket: bucket, PartInterval: DefaultPartInterval,
		storeTimeout: 10 * time.Second, logger: logger}, nil
}

// partName is the name of a recording's n-th part.
func partName(key string, n int) string { return fmt.Sprintf("%s.part-%04d", key, n) }

// notExist maps the object store's "not found" to fs.ErrNotExist.
func notExist(err error) error {
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%w: %w", fs.ErrNotExist, err)
	}
	return err
}

func (b *ObjectBlobs) exists(ctx context.Context, name string) (bool, error) {
	_, err := b.obs.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Create makes the local file of a new recording; a key taken in the
// bucket (by a recording of another node) is fs.ErrExist too.
func (b *ObjectBlobs) Create(key string) (BlobFile, error) {
	if _, err := b.local.path(key); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	for _, name := range []string{key, partName(key, 0)} {
		// NATS away does not stop a recording: it is written locally and
		// its key holds the call's id, so no other node uses it.
		if taken, err := b.exists(ctx, name); err != nil {
			b.logger.Warn("object store not reachable; recording locally", zap.String("object", key), zap.Error(err))
			break
		} else if taken {
			return nil, fmt.Errorf("recorder: %s: %w", key, fs.ErrExist)
		}
	}
	f, err := b.local.Create(key)
	if err != nil {
		return nil, err
	}
	return &objFile{BlobFile: f, b: b, key: key, lastPart: time.Now()}, nil
}

// OpenFile opens a recording for repair: its local file, or else one put
// together from what the bucket holds of it (the complete object, or its
// parts in order). Nothing of it anywhere is fs.ErrNotExist.
func (b *ObjectBlobs) OpenFile(key string) (BlobFile, error) {
	f, err := b.local.OpenFile(key)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = b.download(key)
	}
	if err != nil {
		return nil, err
	}
	parts, err := b.countParts(key)
	if err != nil {
		f.Close()
		return nil, err
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return nil, err
	}
	// New bytes (a repair only shortens the file) would go on as parts.
	return &objFile{BlobFile: f, b: b, key: key, part: parts, copied: size, lastPart: time.Now()}, nil
}

// download fills a new local file with the complete object, or else with
// the parts in order.
func (b *ObjectBlobs) download(key string) (BlobFile, error) {
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	names := []string{key}
	if ok, err := b.exists(ctx, key); err != nil {
		return nil, err
	} else if !ok {
		n, err := b.countParts(key)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("recorder: %s: %w", key, fs.ErrNotExist)
		}
		names = names[:0]
		for i := range n {
			names = append(names, partName(key, i))
		}
	}
	f, err := b.local.Create(key)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if err := b.copyObject(ctx, f, name); err != nil {
			f.Close()
			_ = b.local.Delete(key)
			return nil, err
		}
	}
	return f, nil
}

func (b *ObjectBlobs) copyObject(ctx context.Context, w io.Writer, name string) error {
	r, err := b.obs.Get(ctx, name)
	if err != nil {
		return notExist(err)
	}
	defer r.Close()
	_, err = io.Copy(w, r)
	return err
}

// countParts is how many parts of key are in the bucket (they are
// numbered from 0 without gaps).
func (b *ObjectBlobs) countParts(key string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	n := 0
	for {
		ok, err := b.exists(ctx, partName(key, n))
		if err != nil {
			return n, fmt.Errorf("recorder: object store: %w", err)
		}
		if !ok {
			return n, nil
		}
		n++
	}
}

// Open opens a recording for reading: this node's local file if it still
// has one (a recording the bucket did not take), else the stored object.
func (b *ObjectBlobs) Open(key string) (Blob, error) {
	if f, err := b.local.Open(key); !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), partTimeout)
	defer cancel()
	info, err := b.obs.GetInfo(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("recorder: object store: %w", notExist(err))
	}
	return &objBlob{obs: b.obs, info: info}, nil
}

// OpenAudio is Open for the replay API (api.RecordingAudio).
func (b *ObjectBlobs) OpenAudio(key string) (io.ReadSeekCloser, error) { return b.Open(key) }

// Delete removes a recording everywhere: its object, its parts and its
// local file.
func (b *ObjectBlobs) Delete(key string) error {
	if err := b.local.Delete(key); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	if err := b.remove(ctx, key); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("recorder: object store: %w", err)
	}
	return b.deleteParts(ctx, key)
}

// deleteParts removes the parts of key, from the first on.
func (b *ObjectBlobs) deleteParts(ctx context.Context, key string) error {
	for n := 0; ; n++ {
		err := b.remove(ctx, partName(key, n))
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("recorder: object store: %w", err)
		}
	}
}

// remove deletes an object and then the delete marker the Object Store
// leaves in its place (its meta subject), which would otherwise stay in
// the stream for ever: a recording of an hour leaves some 900 parts.
func (b *ObjectBlobs) remove(ctx context.Context, name string) error {
	if err := b.obs.Delete(ctx, name); err != nil {
		return err
	}
	meta := fmt.Sprintf("$O.%s.M.%s", b.bucket, base64.URLEncoding.EncodeToString([]byte(name)))
	return b.stream.Purge(ctx, jetstream.WithPurgeSubject(meta))
}

// objFile is a recording being written (or repaired) into ObjectBlobs.
type objFile struct {
	BlobFile // the local file
	b        *ObjectBlobs
	key      string

	mu       sync.Mutex // Sync (a sync worker) and Close
	part     int        // the next part's number
	copied   int64      // bytes of the file in parts
	lastPart time.Time
}

// Sync makes the local file durable and, every PartInterval, copies what
// was written since the last part to the bucket. A part that cannot be
// stored (NATS away) is not an error of the recording: its bytes go with
// the next one.
func (f *objFile) Sync() error {
	if err := f.BlobFile.Sync(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.lastPart) < f.b.PartInterval {
		return nil
	}
	f.lastPart = time.Now()
	if err := f.storePart(); err != nil {
		// The sync workers are shared: while NATS is away, one session's
		// parts must not keep them from syncing the others' files.
		f.lastPart = time.Now().Add(partBackoff)
		f.b.logger.Warn("recording part not stored in the object store; retried with the next one",
			zap.String("object", partName(f.key, f.part)), zap.Error(err))
	}
	return nil
}

func (f *objFile) storePart() error {
	size, err := f.Size()
	if err != nil || size <= f.copied {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), partTimeout)
	defer cancel()
	_, err = f.b.obs.Put(ctx, jetstream.ObjectMeta{Name: partName(f.key, f.part)},
		io.NewSectionReader(f.BlobFile, f.copied, size-f.copied))
	if err != nil {
		return err
	}
	f.part++
	f.copied = size
	return nil
}

// Close stores the complete file under its key, then removes the parts and
// the local file. If the bucket does not take it within a few tries, the
// local file stays (Open still serves it on this node) and the error is
// returned (the recording is then marked partial).
func (f *objFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.BlobFile.Close(); err != nil {
		return err
	}
	b := f.b
	local, err := b.local.Open(f.key)
	if err != nil {
		return err
	}
	defer local.Close()
	// Three tries, for a NATS server that is failing over, each given time
	// for the size at a modest 5 MB/s.
	size := local.Size()
	for try, wait := 1, time.Second; ; try, wait = try+1, wait*4 {
		ctx, cancel := context.WithTimeout(context.Background(), b.storeTimeout+time.Duration(size/5e6)*time.Second)
		_, err = b.obs.Put(ctx, jetstream.ObjectMeta{Name: f.key}, local)
		cancel()
		if err == nil {
			break
		}
		if _, serr := local.Seek(0, io.SeekStart); serr != nil || try == 3 {
			return fmt.Errorf("recorder: store %s in the object store: %w", f.key, err)
		}
		time.Sleep(wait) // finish runs on a goroutine of its own
	}
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	if err := b.deleteParts(ctx, f.key); err != nil {
		b.logger.Warn("parts of a stored recording not removed", zap.String("object", f.key), zap.Error(err))
	}
	local.Close()
	return b.local.Delete(f.key)
}

// objBlob reads a stored object. The object store reads sequentially: a
// Seek only moves the position; the next Read reopens the object if it has
// to go back, and skips forward to the position.
type objBlob struct {
	obs  jetstream.ObjectStore
	info *jetstream.ObjectInfo

	pos    int64 // where the next Read starts
	r      jetstream.ObjectResult
	rpos   int64 // where r is
	cancel context.CancelFunc
}

func (o *objBlob) Size() int64        { return int64(o.info.Size) }
func (o *objBlob) ModTime() time.Time { return o.info.ModTime }

func (o *objBlob) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += o.pos
	case io.SeekEnd:
		offset += o.Size()
	default:
		return o.pos, errors.New("recorder: bad whence")
	}
	if offset < 0 {
		return o.pos, errors.New("recorder: seek before the start")
	}
	o.pos = offset
	return offset, nil
}

func (o *objBlob) Read(p []byte) (int, error) {
	if o.pos >= o.Size() {
		return 0, io.EOF
	}
	if o.r == nil || o.rpos > o.pos {
		o.closeReader()
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		r, err := o.obs.Get(ctx, o.info.Name)
		if err != nil {
			cancel()
			return 0, notExist(err)
		}
		o.r, o.rpos, o.cancel = r, 0, cancel
	}
	if skip := o.pos - o.rpos; skip > 0 {
		n, err := io.CopyN(io.Discard, o.r, skip)
		o.rpos += n
		if err != nil {
			return 0, err
		}
	}
	n, err := o.r.Read(p)
	o.pos += int64(n)
	o.rpos += int64(n)
	return n, err
}

func (o *objBlob) closeReader() {
	if o.r != nil {
		o.r.Close()
		o.cancel()
		o.r = nil
	}
}

func (o *objBlob) Close() error {
	o.closeReader()
	return nil
}
