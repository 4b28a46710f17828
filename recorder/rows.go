package recorder

import (
	"context"
	"errors"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// BatchCatalog is a Catalog that can save many rows in one transaction
// (storage.Store). The recorder uses it when it has it.
type BatchCatalog interface {
	Catalog
	SaveRecordings(ctx context.Context, rs []storage.Recording) error
}

// rowWriter saves the recording rows of every session of a Server on one
// goroutine, as many rows a transaction as have queued up meanwhile. A
// recorder taking hundreds of sessions a second then holds one database
// connection and one commit per batch, instead of a connection and a commit
// per row: on a shared pool, a save per session starved the PBX's routing
// lookups and failed calls (issue 9).
//
// Goroutines: run is the only goroutine talking to the catalog for rows;
// save and saveLater only queue. Rows are saved in the order queued, so a
// session's start row never lands after its final one.
type rowWriter struct {
	catalog Catalog
	queue   chan rowRequest
}

type rowRequest struct {
	rec  storage.Recording
	done chan error // nil: nobody waits (the start row)
}

const (
	rowQueueLen = 8192
	maxRowBatch = 1024
	// rowSaveTimeout bounds one batch's transaction.
	rowSaveTimeout = 5 * time.Second
)

func newRowWriter(c Catalog) *rowWriter {
	return &rowWriter{catalog: c, queue: make(chan rowRequest, rowQueueLen)}
}

// saveLater queues a row nobody waits for. When the queue is full the row
// is not saved now; the session's final row (or the journal) saves it later.
func (w *rowWriter) saveLater(r storage.Recording) {
	select {
	case w.queue <- rowRequest{rec: r}:
	default:
	}
}

// save queues a row and waits for its transaction, or for ctx.
func (w *rowWriter) save(ctx context.Context, r storage.Recording) error {
	done := make(chan error, 1)
	select {
	case w.queue <- rowRequest{rec: r, done: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run saves queued rows until stop is closed and the queue is empty.
func (w *rowWriter) run(stop <-chan struct{}) {
	batch := make([]rowRequest, 0, maxRowBatch)
	for {
		select {
		case req := <-w.queue:
			batch = append(batch[:0], req)
		case <-stop:
			// Whatever is queued still goes out: finishing sessions wait.
			for {
				select {
				case req := <-w.queue:
					w.saveBatch([]rowRequest{req})
				default:
					return
				}
			}
		}
	more:
		for len(batch) < maxRowBatch {
			select {
			case req := <-w.queue:
				batch = append(batch, req)
			default:
				break more
			}
		}
		w.saveBatch(latestRows(batch))
		clear(batch)
	}
}

// latestRows drops the rows a later row of the same recording replaces
// (a start row still queued when its final row comes: behind a slow
// database, short calls then cost one row, not two). The replaced row's
// waiter, if any, is answered with the later row's result.
func latestRows(batch []rowRequest) []rowRequest {
	last := make(map[string]int, len(batch))
	for i, req := range batch {
		last[req.rec.ID] = i
	}
	if len(last) == len(batch) {
		return batch
	}
	out := batch[:0]
	for i, req := range batch {
		j := last[req.rec.ID]
		if j == i {
			out = append(out, req)
			continue
		}
		if req.done != nil {
			// Rare (a retried commit): keep it, in order, rather than merge waiters.
			out = append(out, req)
		}
	}
	return out
}

func (w *rowWriter) saveBatch(batch []rowRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), rowSaveTimeout)
	defer cancel()
	var err error
	if bc, ok := w.catalog.(BatchCatalog); ok && len(batch) > 1 {
		rows := make([]storage.Recording, len(batch))
		for i, req := range batch {
			rows[i] = req.rec
		}
		err = bc.SaveRecordings(ctx, rows)
		if err == nil || !errors.Is(err, storage.ErrInvalidRecording) {
			for _, req := range batch {
				reply(req, err)
			}
			return
		}
		// One bad row fails the batch: find it by saving one by one.
	}
	for _, req := range batch {
		reply(req, w.catalog.SaveRecording(ctx, req.rec))
	}
}

func reply(req rowRequest, err error) {
	if req.done != nil {
		req.done <- err
	}
}
