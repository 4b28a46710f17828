package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// recordingsFlags are --recordings-url and --recordings-replicas, of serve
// and recorder alike.
type recordingsFlags struct {
	URL      string
	Replicas int
}

func (r *recordingsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.URL, "recordings-url", "", "where recording audio is stored: file://<dir>, or jetstream:"+recorder.RecordingsBucket+
		" (a JetStream Object Store bucket on --nats-url, shared by every node); default: file://<data-dir>/recordings")
	fs.IntVar(&r.Replicas, "recordings-replicas", 1, "replicas of the "+recorder.RecordingsBucket+" bucket (and of the LEASES bucket) when this node creates it: 3 on a three-server NATS cluster")
}

// bucketRE is a JetStream bucket name.
var bucketRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// parse reads the URL: a directory (empty: the default one) or a bucket.
func (r recordingsFlags) parse() (dir, bucket string, err error) {
	if r.Replicas < 0 || r.Replicas > 5 {
		return "", "", errors.New("--recordings-replicas must be 1 to 5") // 0 (a Config built in code): 1
	}
	switch u := r.URL; {
	case u == "":
		return "", "", nil
	case strings.HasPrefix(u, "file://"):
		dir = strings.TrimPrefix(u, "file://")
		if dir == "" || strings.ContainsRune(dir, 0) {
			return "", "", errors.New("--recordings-url file:// needs a directory, e.g. file:///var/lib/maskpbx/recordings")
		}
		return filepath.Clean(dir), "", nil
	case strings.HasPrefix(u, "jetstream:"):
		bucket = strings.TrimPrefix(u, "jetstream:")
		if bucket == "" {
			bucket = recorder.RecordingsBucket
		}
		if !bucketRE.MatchString(bucket) {
			return "", "", errors.New("--recordings-url jetstream:<bucket> needs a bucket name of letters, digits, '-' and '_'")
		}
		return "", bucket, nil
	}
	return "", "", errors.New("--recordings-url must be file://<dir> or jetstream:" + recorder.RecordingsBucket)
}

// recordingStore is where recordings are: a blob store the replay API can
// read audio from.
type recordingStore interface {
	recorder.BlobStore
	OpenAudio(key string) (io.ReadSeekCloser, error)
}

// recordingStorage is --recordings-url opened. Shared is set for a store
// every node reaches (the object store): retention and erasure then work
// on every node's recordings, retention under the lease.
type recordingStorage struct {
	Blobs  recordingStore
	Shared bool
	node   string // this node's name (--node): of an in-process recorder too
	lease  *recorder.Lease
	leases jetstream.KeyValue // the LEASES bucket, with Shared: external recorders' heartbeats too
}

// retentionLeaseTTL is how long a node holds the retention lease without
// renewing it (it renews before each batch of 100 deletions).
const retentionLeaseTTL = 2 * time.Minute

// openRecordingStorage opens the store flags name; js may be nil when
// there is no NATS (then only a directory will do).
func openRecordingStorage(ctx context.Context, flags recordingsFlags, dataDir, node string, js jetstream.JetStream,
	logger *zap.Logger) (recordingStorage, error) {
	dir, bucket, err := flags.parse()
	if err != nil {
		return recordingStorage{}, err
	}
	local := filepath.Join(dataDir, "recordings")
	if bucket == "" {
		if dir != "" {
			local = dir
		}
		blobs, err := recorder.NewFSBlobs(local)
		return recordingStorage{Blobs: blobs, node: node}, err
	}
	if js == nil {
		return recordingStorage{}, errors.New("--recordings-url jetstream: needs --nats-url")
	}
	blobs, err := recorder.OpenObjectBlobs(ctx, js, bucket, flags.Replicas, local, logger.Named("recordings"))
	if err != nil {
		return recordingStorage{}, err
	}
	kv, err := recorder.OpenLeases(ctx, js, flags.Replicas)
	if err != nil {
		return recordingStorage{}, err
	}
	logger.Info("recordings are stored in the object store", zap.String("bucket", bucket))
	return recordingStorage{Blobs: blobs, Shared: true, node: node, leases: kv,
		lease: recorder.NewLease(kv, "retention", node, retentionLeaseTTL)}, nil
}

// retention is the retention job of this store, or nil for days 0.
func (s recordingStorage) retention(store *storage.Store, node string, days int, logger *zap.Logger) *recorder.Retention {
	if days <= 0 {
		return nil
	}
	r := &recorder.Retention{Catalog: store, Blobs: s.Blobs, Node: node, MaxAge: time.Duration(days) * 24 * time.Hour,
		Logger: logger.Named("retention")}
	if s.Shared {
		r.Node, r.Lease = "", s.lease
	}
	return r
}

// erasure is the job deleting erased clients' audio from this store.
func (s recordingStorage) erasure(store *storage.Store, node string, logger *zap.Logger) *recorder.Erasure {
	if s.Shared {
		node = "" // every node's; deletions are idempotent
	}
	return &recorder.Erasure{Catalog: store, Blobs: s.Blobs, Node: node, Logger: logger.Named("erasure")}
}

// recoverRecordings finishes the recordings a dead node's in-process
// recorder left under way, when they are in the shared store: each is put
// together from the parts the node stored as its call went
// (recorder.RecoverPartial), saved (partial, or missing if nothing
// survived) and announced with recording.ready, as the node itself would
// have at its restart (its event id is the recording's: done twice, it
// counts once).
func (s recordingStorage) recoverRecordings(ctx context.Context, store *storage.Store, sink recorder.EventSink, node string,
	logger *zap.Logger) {
	if !s.Shared {
		return
	}
	recs, err := store.RecordingsUnderWay(ctx, node)
	if err != nil {
		logger.Error("recordings of a dead node not recovered", zap.String("node", node), zap.Error(err))
		return
	}
	for _, rec := range recs {
		log := logger.With(zap.String("node", node), zap.String("recording_id", rec.ID), zap.String("call_id", rec.CallID))
		rec, err := recorder.RecoverPartial(s.Blobs, rec)
		if err == nil {
			err = store.SaveRecording(ctx, rec)
		}
		if err == nil && rec.Source == storage.SourceMaskPBX {
			err = sink.Publish(ctx, events.Event{ID: rec.ID, Kind: events.RecordingReady, Time: time.Now(), CallID: rec.CallID,
				Direction: rec.Direction, ClientID: rec.ClientID, ManagerID: rec.ManagerID, Recording: rec.Status})
		}
		if err != nil {
			log.Error("recording of a dead node not recovered", zap.Error(err))
			continue
		}
		log.Warn("recording of a dead node recovered from its parts", zap.String("status", rec.Status),
			zap.Duration("duration", rec.Duration.Round(time.Millisecond)))
	}
}

// recorderWatch is a serve node's watch on external recorders' heartbeats
// (recorder nodes beat with recorderBeat): the first node to find one
// stopped recovers its recordings under way from their parts. Nil without a
// shared store: a recorder's local files wait for its own restart.
func (s recordingStorage) recorderWatch(store *storage.Store, sink recorder.EventSink, logger *zap.Logger) *nodeWatch {
	if !s.Shared {
		return nil
	}
	return &nodeWatch{kv: s.leases, prefix: recorderHeartbeatKey, logger: logger.Named("recorders"), now: time.Now,
		closer: func(ctx context.Context, node string) { s.recoverRecordings(ctx, store, sink, node, logger) }}
}

// recorderBeat is an external recorder's heartbeat, for recorderWatch; nil
// without a shared store.
func (s recordingStorage) recorderBeat(node string, logger *zap.Logger) *nodeWatch {
	if !s.Shared {
		return nil
	}
	return &nodeWatch{kv: s.leases, self: node, prefix: recorderHeartbeatKey, beatOnly: true,
		logger: logger.Named("heartbeat"), now: time.Now}
}
