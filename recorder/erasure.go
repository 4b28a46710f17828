package recorder

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/storage"
)

// ErasureCatalog is what deleting erased clients' audio needs of
// storage.Store.
type ErasureCatalog interface {
	ErasableRecordings(ctx context.Context, node string, limit int) ([]storage.Recording, error)
	MarkAudioDeleted(ctx context.Context, id, actor, reason string) error
}

// Erasure deletes, from this node's blob store, the audio of recordings whose
// client was erased (and is not under legal hold), and marks their rows
// (audited). The erasure itself commits the rows first; this runs after the
// commit, at once from the API on the node that holds the audio and every
// Interval on each recorder node, so a deletion that failed is retried
// until it succeeds, and is logged each time it fails.
type Erasure struct {
	Catalog  ErasureCatalog
	Blobs    BlobStore
	Node     string
	Interval time.Duration // between runs; default 1 minute
	Logger   *zap.Logger

	mu sync.Mutex // one pass at a time: the API's and the loop's
}

// erasureActor is how the erasure's file deletion appears in the audit log.
const erasureActor = "system:erasure"

// Run deletes erased clients' audio now and then every Interval until ctx
// ends.
func (e *Erasure) Run(ctx context.Context) error {
	interval := e.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	for {
		_, _ = e.EraseAudio(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// EraseAudio deletes the audio of every erasable recording on this node and
// reports how many it deleted; a failure is logged and left for the next
// run.
func (e *Erasure) EraseAudio(ctx context.Context) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, err := e.eraseAll(ctx)
	if err != nil {
		e.Logger.Error("erased clients' audio not deleted yet; retried", zap.Int("deleted", n), zap.Error(err))
	} else if n > 0 {
		e.Logger.Info("erased clients' audio deleted", zap.Int("deleted", n))
	}
	return n, err
}

func (e *Erasure) eraseAll(ctx context.Context) (int, error) {
	return deleteAudio(ctx, e.Blobs,
		func() ([]storage.Recording, error) { return e.Catalog.ErasableRecordings(ctx, e.Node, 100) },
		func(id string) error { return e.Catalog.MarkAudioDeleted(ctx, id, erasureActor, "client erased") })
}
