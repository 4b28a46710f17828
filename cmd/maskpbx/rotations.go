package main

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/storage"
)

// rotationCheck is how often serve looks for repeating rotations that are
// due (storage.RunDueRotations: each run is claimed by one node only).
const rotationCheck = time.Minute

// runRotationSchedules carries out the repeating rotations as they fall
// due, until ctx ends; every moved client is told to routing (changed).
func runRotationSchedules(ctx context.Context, store *storage.Store, changed func(clientID string), every time.Duration, logger *zap.Logger) error {
	if every <= 0 {
		every = rotationCheck
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		done, err := store.RunDueRotations(ctx, time.Now())
		for _, rot := range done {
			for _, m := range rot.Moves {
				changed(m.ClientID)
			}
			logger.Info("repeating rotation carried out", zap.String("rotation_id", rot.ID), zap.Int("moved", len(rot.Moves)),
				zap.Int("skipped", len(rot.Skipped)))
		}
		if err != nil && ctx.Err() == nil {
			logger.Warn("repeating rotations: a run failed; it waits for its next period", zap.Error(err))
		}
	}
}
