package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"go.uber.org/zap"
)

// Spool keeps the outbox in the file at path as well as in memory, so that
// events queued while NATS is away survive a crash of the process: each is
// written (and synced) before Publish returns, and the file is emptied when
// the outbox is. Events a previous run left in the file are queued first, in
// their order, and sent as soon as NATS takes them; one that already got
// through before the crash is dropped as a duplicate by JetStream (same
// Nats-Msg-Id, within the stream's duplicate window) and by the CDR ledger.
// Call it before the first Publish.
func (p *Publisher) Spool(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("events: spool: %w", err)
	}
	left, bad, err := readSpool(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("events: spool %s: %w", path, err)
	}
	if bad > 0 {
		// A line cut by the crash itself: that event never got its Publish
		// answered, and its call's later events (or the restart's node_lost)
		// still close the CDR.
		p.logger.Warn("unreadable lines in the event spool skipped", zap.Int("lines", bad))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spool = f
	if len(left) == 0 {
		p.spoolEmpty()
		return nil
	}
	if len(p.outbox) == 0 {
		p.emptied = make(chan struct{})
	}
	p.outbox = append(left, p.outbox...)
	// Rewrite the file as the outbox now stands: the readable events only.
	p.spoolEmpty()
	for _, m := range p.outbox {
		if err := p.spoolAppend(m); err != nil {
			return fmt.Errorf("events: spool %s: %w", path, err)
		}
	}
	p.logger.Warn("call events a previous run left unsent queued again", zap.Int("events", len(left)))
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// readSpool reads the events in f, one JSON event per line; bad counts the
// lines that are not one.
func readSpool(f *os.File) (out []pending, bad int, err error) {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e Event
		if json.Unmarshal(line, &e) != nil || e.Validate() != nil {
			bad++
			continue
		}
		out = append(out, pending{id: e.ID, callID: e.CallID, kind: e.Kind, subject: e.Subject(),
			data: append([]byte(nil), line...)})
	}
	return out, bad, sc.Err()
}

// spoolAppend writes m at the end of the spool and syncs it; p.mu is held.
func (p *Publisher) spoolAppend(m pending) error {
	if p.spool == nil {
		return nil
	}
	line := append(append(make([]byte, 0, len(m.data)+1), m.data...), '\n')
	if _, err := p.spool.Write(line); err != nil {
		return err
	}
	return p.spool.Sync()
}

// spoolEmpty empties the spool once every event in it has been stored by
// JetStream; p.mu is held.
func (p *Publisher) spoolEmpty() {
	if p.spool == nil {
		return
	}
	if err := p.spool.Truncate(0); err == nil {
		_, err = p.spool.Seek(0, 0)
		if err == nil {
			return
		}
	}
	p.logger.Error("event spool not emptied: its events will be sent again at the next start (duplicates are dropped)")
}
