package alerts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// cdrSlack is how far before the cursor each pass reads CDRs again: a CDR
// transaction that committed after a later one is not skipped (the alerts'
// keys make the second reading raise nothing twice).
const cdrSlack = 2 * time.Minute

// cdrPage is how many CDRs one query reads.
const cdrPage = 1000

// callRules runs missed_call and off_hours over the calls that ended since
// the cursor and returns the new cursor.
func (e *Evaluator) callRules(ctx context.Context, since time.Time) (time.Time, error) {
	from := since
	if !from.IsZero() {
		from = from.Add(-cdrSlack)
	}
	after := ""
	for {
		cdrs, err := e.store.CDRsUpdatedSince(ctx, from, after, cdrPage)
		if err != nil {
			return since, err
		}
		for _, c := range cdrs {
			if err := e.CallEnded(ctx, c); err != nil {
				return since, err
			}
			from, after = c.UpdatedAt, c.CallID
			if c.UpdatedAt.After(since) {
				since = c.UpdatedAt
			}
		}
		if len(cdrs) < cdrPage {
			return since, nil
		}
	}
}

// missedDispositions are the ends of an inbound call nobody answered.
var missedDispositions = []string{"missed", "no_answer", "cancelled", "busy"}

// CallEnded applies the rules of one ended call: missed_call for a missed
// inbound call of a client whose segment alerts on misses (the
// supervisor's at once), off_hours for a call out to a client started
// outside his segment's working hours. Run from call events as they come
// and again from the CDRs; an alert is raised once either way.
func (e *Evaluator) CallEnded(ctx context.Context, c storage.CDR) error {
	if c.ClientID == "" {
		return nil
	}
	missed := c.Direction == "inbound" && c.AnsweredAt == nil && slices.Contains(missedDispositions, c.Disposition)
	outbound := c.Direction == "outbound" && c.OfferedAt != nil
	if !missed && !outbound {
		return nil
	}
	seg, err := e.store.SegmentOfClient(ctx, c.ClientID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	ev := storage.AlertEvidence{CallIDs: []string{c.CallID}}
	switch {
	case missed && seg.AlertMissed:
		return e.raise(ctx, storage.NewAlert{Rule: RuleMissedCall, DedupKey: RuleMissedCall + "|call:" + c.CallID,
			ClientID: c.ClientID, ManagerID: c.ManagerID, SupervisorID: seg.SupervisorID, Evidence: ev})
	case outbound && !seg.Hours.Open(*c.OfferedAt, e.cfg.Location):
		return e.raise(ctx, storage.NewAlert{Rule: RuleOffHours, DedupKey: RuleOffHours + "|call:" + c.CallID,
			ClientID: c.ClientID, ManagerID: c.ManagerID, SupervisorID: seg.SupervisorID, Evidence: ev})
	}
	return nil
}

// quietEvidence bounds the calls an alert lists.
const quietEvidence = 20

// quietClients raises client_quiet for every assigned client with a regular
// history who has gone quiet: at least QuietMinCalls calls in QuietWindow,
// and the time since his last call longer than QuietFactor times the median
// gap between them. One alert per quiet spell (keyed by his last call).
func (e *Evaluator) quietClients(ctx context.Context, now time.Time) error {
	th := e.cfg.Thresholds
	calls, err := e.store.AssignedClientCalls(ctx, now.Add(-th.QuietWindow))
	if err != nil {
		return err
	}
	for len(calls) > 0 {
		n := 1
		for n < len(calls) && calls[n].ClientID == calls[0].ClientID {
			n++
		}
		if err := e.quietClient(ctx, now, calls[:n]); err != nil {
			return err
		}
		calls = calls[n:]
	}
	return nil
}

func (e *Evaluator) quietClient(ctx context.Context, now time.Time, calls []storage.ClientCall) error {
	th := e.cfg.Thresholds
	if len(calls) < th.QuietMinCalls || len(calls) < 2 {
		return nil
	}
	gaps := make([]time.Duration, 0, len(calls)-1)
	for i := 1; i < len(calls); i++ {
		gaps = append(gaps, calls[i].At.Sub(calls[i-1].At))
	}
	slices.Sort(gaps)
	median := gaps[len(gaps)/2]
	if len(gaps)%2 == 0 {
		median = (gaps[len(gaps)/2-1] + gaps[len(gaps)/2]) / 2
	}
	last := calls[len(calls)-1]
	silent := now.Sub(last.At)
	if median <= 0 || float64(silent) <= float64(median)*th.QuietFactor {
		return nil
	}
	ev := storage.AlertEvidence{Figures: map[string]int64{"calls": int64(len(calls)),
		"median_gap_seconds": int64(median / time.Second), "silent_seconds": int64(silent / time.Second)}}
	for i := len(calls) - 1; i >= 0 && len(ev.CallIDs) < quietEvidence; i-- {
		ev.CallIDs = append(ev.CallIDs, calls[i].CallID)
	}
	supervisor := ""
	if seg, err := e.store.SegmentOfClient(ctx, last.ClientID); err == nil {
		supervisor = seg.SupervisorID
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return e.raise(ctx, storage.NewAlert{Rule: RuleClientQuiet, DedupKey: RuleClientQuiet + "|client:" + last.ClientID + "|" + last.CallID,
		ClientID: last.ClientID, ManagerID: last.ManagerID, SupervisorID: supervisor, Evidence: ev})
}

// dropEvidence bounds the calls a manager_drop alert lists.
const dropEvidence = 20

// managerDrops raises manager_drop for every active manager whose calls
// with clients in the last 7 days fell by more than DropPercent against
// the 7 days before (which had DropMinCalls or more). One alert per manager
// and ISO week.
func (e *Evaluator) managerDrops(ctx context.Context, now time.Time) error {
	th := e.cfg.Thresholds
	weeks, err := e.store.ManagerCallWeeks(ctx, now)
	if err != nil {
		return err
	}
	week := 7 * 24 * time.Hour
	for _, w := range weeks {
		if w.Previous < int64(th.DropMinCalls) || w.Current*100 >= w.Previous*int64(100-th.DropPercent) {
			continue
		}
		ids, err := e.store.ManagerCallIDs(ctx, w.ManagerID, now.Add(-2*week), now, dropEvidence)
		if err != nil {
			return err
		}
		year, wk := now.ISOWeek()
		err = e.raise(ctx, storage.NewAlert{Rule: RuleManagerDrop,
			DedupKey:  fmt.Sprintf("%s|manager:%s|%d-W%02d", RuleManagerDrop, w.ManagerID, year, wk),
			ManagerID: w.ManagerID,
			Evidence: storage.AlertEvidence{CallIDs: ids,
				Figures: map[string]int64{"previous_week": w.Previous, "last_week": w.Current, "percent": int64(th.DropPercent)}}})
		if err != nil {
			return err
		}
	}
	return nil
}
