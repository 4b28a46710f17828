package recorder

import (
	"context"
	"errors"
	"io/fs"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/storage"
)

// commit makes a finished recording known: its row saved, its
// recording.ready event published (for calls of our PBX), and only then
// its journal entry removed. Whatever fails leaves the entry for the next
// sweep; every step may run twice (the row is an upsert, the event id is
// the recording id, which JetStream and the CDR writer both deduplicate).
func (s *Server) commit(ctx context.Context, rec storage.Recording) bool {
	log := s.logger.With(zap.String("recording_id", rec.ID), zap.String("call_id", rec.CallID))
	var err error
	for attempt, wait := 0, 500*time.Millisecond; attempt < 3; attempt, wait = attempt+1, 2*wait {
		sctx, cancel := context.WithTimeout(ctx, 2*rowSaveTimeout)
		err = s.rows.save(sctx, rec)
		cancel()
		if err == nil || errors.Is(err, storage.ErrInvalidRecording) {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	switch {
	case errors.Is(err, storage.ErrInvalidRecording):
		// Cannot ever be saved; keeping it would retry forever.
		log.Error("recording row invalid; dropped from the journal", zap.Error(err))
		_ = s.journal.remove(rec.ID)
		return false
	case err != nil:
		s.stats.saveErrors.Add(1)
		log.Error("recording row not saved; the journal keeps it for a retry", zap.Error(err))
		return false
	}
	if rec.Source == storage.SourceMaskPBX && s.events != nil {
		ev := events.Event{ID: rec.ID, Kind: events.RecordingReady, Time: time.Now(), CallID: rec.CallID, Direction: rec.Direction,
			ClientID: rec.ClientID, ManagerID: rec.ManagerID, Recording: rec.Status}
		if err := s.events.Publish(ctx, ev); errors.Is(err, events.ErrInvalidEvent) {
			log.Error("recording.ready event invalid; not sent", zap.Error(err))
		} else if err != nil {
			log.Warn("recording.ready not published; the journal keeps it for a retry", zap.Error(err))
			return false
		}
	}
	if err := s.journal.remove(rec.ID); err != nil {
		log.Warn("journal entry not removed", zap.Error(err))
	}
	switch rec.Status {
	case storage.RecordingComplete:
		s.stats.complete.Add(1)
	case storage.RecordingPartial:
		s.stats.partial.Add(1)
	case storage.RecordingMissing:
		s.stats.missing.Add(1)
	}
	return true
}

// sweep finishes every journal entry no live session owns: recordings of a
// process that died mid-call are repaired and marked partial; finished ones
// whose save or event failed are committed again.
func (s *Server) sweep(ctx context.Context) {
	if !s.sweepMu.TryLock() {
		return // one is running; the next tick comes soon enough
	}
	defer s.sweepMu.Unlock()
	entries, bad, err := s.journal.list()
	if err != nil {
		s.logger.Error("journal unreadable", zap.Error(err))
		return
	}
	for _, name := range bad {
		s.logger.Error("journal entry unreadable; left in place", zap.String("file", name))
	}
	live := s.liveRecordings()
	for _, e := range entries {
		if ctx.Err() != nil {
			return
		}
		rec := e.Recording
		if live[rec.ID] {
			continue
		}
		if e.Stage == stageRecording {
			var err error
			if rec, err = s.repair(rec); err != nil {
				s.logger.Error("recording not repaired; will retry", zap.String("recording_id", rec.ID), zap.Error(err))
				continue
			}
			if err := s.journal.write(journalEntry{Stage: stageFinal, Recording: rec}); err != nil {
				s.logger.Error("journal not updated", zap.String("recording_id", rec.ID), zap.Error(err))
			}
			s.logger.Warn("recording recovered after its session was lost", zap.String("recording_id", rec.ID),
				zap.String("call_id", rec.CallID), zap.String("status", rec.Status), zap.Duration("duration", rec.Duration))
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		if s.commit(cctx, rec) {
			s.stats.recovered.Add(1)
		}
		cancel()
	}
}

// repair makes an unfinished recording file playable: whatever audio
// reached the disk is kept, marked partial. A file that never made it (or
// is not ours) leaves the recording missing.
func (s *Server) repair(rec storage.Recording) (storage.Recording, error) {
	return RecoverPartial(s.blobs, rec)
}

// RecoverPartial makes the audio of a recording whose writer died playable
// and returns its row as it should be saved: status partial with the
// duration, size and SHA-256 of what survived, or missing if nothing did.
// With ObjectBlobs it works on any node: the recording is put together
// from the parts its node stored as the call went, and stored complete.
// Running it twice changes nothing.
func RecoverPartial(blobs BlobStore, rec storage.Recording) (storage.Recording, error) {
	rec.Status, rec.Duration, rec.SizeBytes, rec.SHA256 = storage.RecordingMissing, 0, 0, ""
	f, err := blobs.OpenFile(rec.BlobKey)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrBadKey) {
		return rec, nil
	}
	if err != nil {
		return rec, err
	}
	dataLen, _, err := repairWAV(f)
	closeErr := f.Close()
	if errors.Is(err, ErrNotWAV) {
		return rec, nil
	}
	if err = errors.Join(err, closeErr); err != nil {
		return rec, err
	}
	size, sum, err := hashBlob(blobs, rec.BlobKey)
	if err != nil {
		return rec, err
	}
	rec.Status = storage.RecordingPartial
	rec.Duration = time.Duration(dataLen/bytesPerFrame) * time.Second / SampleRate
	rec.SizeBytes, rec.SHA256 = size, sum
	return rec, nil
}
