package recorder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/storage"
)

// RetentionCatalog is what retention needs of storage.Store.
type RetentionCatalog interface {
	ExpiredRecordings(ctx context.Context, node string, before time.Time, limit int) ([]storage.Recording, error)
	MarkAudioDeleted(ctx context.Context, id, actor, reason string) error
}

// Retention deletes the audio of recordings older than MaxAge from this
// node's blob store and marks their rows (audited); the rows stay.
type Retention struct {
	Catalog  RetentionCatalog
	Blobs    BlobStore
	Node     string
	MaxAge   time.Duration
	Interval time.Duration // between runs; default 1h
	Logger   *zap.Logger
}

// retentionActor is how retention appears in the audit log.
const retentionActor = "system:retention"

// Run deletes expired audio now and then every Interval until ctx ends.
func (r *Retention) Run(ctx context.Context) error {
	if r.MaxAge <= 0 {
		return errors.New("recorder: retention needs a positive MaxAge")
	}
	interval := r.Interval
	if interval <= 0 {
		interval = time.Hour
	}
	for {
		if n, err := r.RunOnce(ctx); err != nil {
			r.Logger.Error("retention run failed", zap.Int("deleted", n), zap.Error(err))
		} else if n > 0 {
			r.Logger.Info("retention deleted recording audio", zap.Int("deleted", n))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// RunOnce deletes the audio of every recording on this node that started
// before now-MaxAge and reports how many it deleted.
func (r *Retention) RunOnce(ctx context.Context) (int, error) {
	before := time.Now().Add(-r.MaxAge)
	reason := fmt.Sprintf("retention: older than %s", r.MaxAge)
	return deleteAudio(ctx, r.Blobs,
		func() ([]storage.Recording, error) { return r.Catalog.ExpiredRecordings(ctx, r.Node, before, 100) },
		func(id string) error { return r.Catalog.MarkAudioDeleted(ctx, id, retentionActor, reason) })
}

// deleteAudio deletes the audio of each recording next lists, in batches
// until it lists none, marking each row with mark once its file is gone,
// and reports how many it deleted.
func deleteAudio(ctx context.Context, blobs BlobStore, next func() ([]storage.Recording, error),
	mark func(id string) error) (int, error) {
	deleted := 0
	for {
		batch, err := next()
		if err != nil || len(batch) == 0 {
			return deleted, err
		}
		for _, rec := range batch {
			if ctx.Err() != nil {
				return deleted, ctx.Err()
			}
			// The file goes first: a row marked deleted over a file that
			// survived would hide audio that should be gone.
			if err := blobs.Delete(rec.BlobKey); err != nil {
				return deleted, fmt.Errorf("delete audio of recording %s: %w", rec.ID, err)
			}
			if err := mark(rec.ID); err != nil {
				return deleted, err
			}
			deleted++
		}
	}
}
