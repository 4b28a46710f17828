package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/storage"
)

// defaultNodeID is --node-id's default: the host name, which stays the same
// across restarts of a node.
func defaultNodeID() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "maskpbx"
}

// closeOrphanedCalls ends, with hang-up side node_lost, every call whose CDR
// node left open: at this node's start (before it takes calls: any such
// call died with the previous process, a kill -9, a power cut; unnamed: rows
// from before nodes were recorded too), or when another node found it dead.
// Each gets an ended event like any other call's, so the CDR, the calls API
// and whoever follows the events all see it end; the event's id is derived
// from the call's, so two nodes closing it at once close it once.
func closeOrphanedCalls(ctx context.Context, store *storage.Store, publisher *events.Publisher, node string, unnamed bool, logger *zap.Logger) {
	open, err := store.OpenCDRs(ctx, node, unnamed)
	if err != nil {
		logger.Error("calls left open by a node not closed", zap.String("node", node), zap.Error(err))
		return
	}
	now := time.Now().UTC()
	closed := 0
	for _, c := range open {
		e := orphanEnded(c, node, now)
		if err := publisher.Publish(ctx, e); err != nil {
			logger.Error("call left open not closed", zap.String("call_id", c.CallID), zap.Error(err))
			continue
		}
		closed++
	}
	if closed > 0 {
		logger.Warn("closed the calls a node left open when it stopped", zap.String("node", node),
			zap.Int("calls", closed), zap.String("hangup_side", events.HangupNodeLost))
	}
}

// orphanEnded is the ended event that closes c: answered if it was,
// otherwise failed.
func orphanEnded(c storage.CDR, node string, at time.Time) events.Event {
	disp := events.DispositionFailed
	if c.AnsweredAt != nil {
		disp = events.DispositionAnswered
	}
	dir := c.Direction
	if dir == "" {
		dir = events.Inbound
	}
	return events.Event{ID: derivedUUID("node_lost:" + c.CallID), Kind: events.Ended, Time: at, CallID: c.CallID,
		Direction: dir, ClientID: c.ClientID, ManagerID: c.ManagerID, Disposition: disp,
		HangupSide: events.HangupNodeLost, Node: node}
}

// derivedUUID is a uuid-shaped name for s (version 8, RFC 9562: custom).
func derivedUUID(s string) string {
	b := sha256.Sum256([]byte(s))
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
