package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/masking"
)

// RecentHolders is how many primary managers before the current one count
// as a client's recent holders: a rotation never gives him back to them.
const RecentHolders = 2

// rotationBatch is how many moves one transaction carries out.
const rotationBatch = 100

// ErrUnknownSegment means a segment named in a request does not exist.
var ErrUnknownSegment = errors.New("storage: unknown segment")

// RotationPlan says which clients a rotation moves, among whom. The
// clients: those of Segment (if set) whose primary manager is one of
// ManagerIDs (if set), else of Team (if set). The managers they may go to:
// ManagerIDs if set, else the active managers (role manager) of Team if
// set, else all of them; only those permitted for each client's segment.
type RotationPlan struct {
	ManagerIDs []string
	Segment    string
	Team       string
	// DryRun plans without moving anyone or storing anything.
	DryRun bool
}

// Rotation is a rotation planned or carried out.
type Rotation struct {
	ID         string // "" for a dry run
	Actor      string
	Segment    string
	Team       string
	ManagerIDs []string
	Moves      []masking.RotationMove
	// Skipped are the clients nobody eligible could take (or, carrying
	// out, whose primary manager changed since the plan was made).
	Skipped   []string
	CreatedAt time.Time
}

// Rotate plans a rotation and, unless it is a dry run, carries it out:
// rotationBatch moves per transaction, each audited as client.reassign
// (reason "rotation:<id> ..."), the rotation kept with its moves.
func (s *Store) Rotate(ctx context.Context, plan RotationPlan, actor string) (Rotation, error) {
	rot := Rotation{Actor: actor, Segment: plan.Segment, Team: plan.Team, ManagerIDs: uniq(plan.ManagerIDs), CreatedAt: time.Now()}
	segs, err := s.Segments(ctx)
	if err != nil {
		return rot, err
	}
	bySegment := map[string]Segment{}
	for _, sg := range segs {
		bySegment[sg.Name] = sg
	}
	if _, ok := bySegment[plan.Segment]; plan.Segment != "" && !ok {
		return rot, ErrUnknownSegment
	}
	candidates, err := s.rotationManagers(ctx, rot.ManagerIDs, plan.Team)
	if err != nil {
		return rot, err
	}
	clients, load, err := s.rotationClients(ctx, plan.Segment, rot.ManagerIDs, plan.Team, bySegment)
	if err != nil {
		return rot, err
	}
	rot.Moves, rot.Skipped = masking.PlanRotation(clients, candidates, load)
	if plan.DryRun || len(rot.Moves) == 0 && len(rot.Skipped) == 0 {
		return rot, nil
	}
	planned := rot.Moves
	rot.Moves = nil
	for start := 0; start < len(planned); start += rotationBatch {
		done, skipped, err := s.carryOut(ctx, &rot, planned[start:min(start+rotationBatch, len(planned))])
		rot.Moves, rot.Skipped = append(rot.Moves, done...), append(rot.Skipped, skipped...)
		if err != nil {
			return rot, err
		}
	}
	if rot.ID == "" { // nothing could move: still kept, with what was skipped
		if err := s.inTx(ctx, func(tx pgx.Tx) error { return insertRotation(ctx, tx, &rot) }); err != nil {
			return rot, err
		}
	}
	_, err = s.pool.Exec(ctx, `UPDATE rotations SET skipped = $2::uuid[] WHERE id = $1`, rot.ID, nonNil(rot.Skipped))
	return rot, err
}

// rotationManagers are the managers a rotation may give clients to.
func (s *Store) rotationManagers(ctx context.Context, ids []string, team string) ([]string, error) {
	ms, err := s.Managers(ctx)
	if err != nil {
		return nil, err
	}
	active := map[string]Manager{}
	for _, m := range ms {
		if m.Status == StatusActive {
			active[m.ID] = m
		}
	}
	if len(ids) > 0 {
		for _, id := range ids {
			if _, ok := active[id]; !ok {
				return nil, ErrUnknownManager
			}
		}
		return ids, nil
	}
	var out []string
	for _, m := range active {
		if m.Role == RoleManager && (team == "" || m.Team == team) {
			out = append(out, m.ID)
		}
	}
	return out, nil
}

// rotationClients reads the clients a rotation moves, with their recent
// holders and segment rule, and every manager's count of primary clients.
func (s *Store) rotationClients(ctx context.Context, segment string, managerIDs []string, team string,
	bySegment map[string]Segment) ([]masking.RotationClient, map[string]int, error) {
	if managerIDs == nil {
		managerIDs = []string{}
	}
	rows, err := s.pool.Query(ctx, `SELECT c.id::text, c.segment, a.manager_id::text,
		(SELECT array_agg(h.manager_id::text ORDER BY h.valid_from DESC, h.id DESC) FROM assignments h
			WHERE h.client_id = c.id AND h.kind = 'primary')
		FROM clients c JOIN assignments a ON a.client_id = c.id AND a.valid_until IS NULL AND a.kind = 'primary'
		WHERE c.erased_at IS NULL AND ($1 = '' OR c.segment = $1)
		AND (cardinality($2::uuid[]) > 0 AND a.manager_id = ANY($2::uuid[])
			OR cardinality($2::uuid[]) = 0 AND ($3 = '' OR a.manager_id IN (SELECT id FROM managers WHERE team = $3)))
		ORDER BY c.created_at, c.id`, segment, managerIDs, team)
	if err != nil {
		return nil, nil, err
	}
	clients, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (masking.RotationClient, error) {
		var c masking.RotationClient
		var seg string
		var history []string
		if err := r.Scan(&c.ID, &seg, &c.Primary, &history); err != nil {
			return c, err
		}
		c.Recent = recentHolders(history)
		if sg, ok := bySegment[seg]; ok && sg.Restricted {
			c.Permitted = sg.Allows
		}
		return c, nil
	})
	if err != nil {
		return nil, nil, err
	}
	load := map[string]int{}
	rows, err = s.pool.Query(ctx, `SELECT a.manager_id::text, count(*) FROM assignments a JOIN clients c ON c.id = a.client_id
		WHERE a.valid_until IS NULL AND a.kind = 'primary' AND c.erased_at IS NULL GROUP BY 1`)
	if err != nil {
		return nil, nil, err
	}
	var id string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { load[id] = n; return nil })
	return clients, load, err
}

// recentHolders are the current primary manager and the RecentHolders
// before him, from his primary managers newest first.
func recentHolders(history []string) []string {
	var out []string
	for _, m := range history {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
		if len(out) == RecentHolders+1 {
			break
		}
	}
	return out
}

// carryOut makes one batch of moves in one transaction (the rotation's row
// with the first). A client whose primary manager is no longer the one the
// plan moves him from (or who was erased meanwhile) is skipped.
func (s *Store) carryOut(ctx context.Context, rot *Rotation, moves []masking.RotationMove) (done []masking.RotationMove, skipped []string, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		done, skipped = nil, nil
		if rot.ID == "" {
			if err := insertRotation(ctx, tx, rot); err != nil {
				return err
			}
		}
		for _, m := range moves {
			moved, err := rotateClient(ctx, tx, rot.ID, m, rot.Actor)
			if err != nil {
				return err
			}
			if !moved {
				skipped = append(skipped, m.ClientID)
				continue
			}
			done = append(done, m)
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: rot.Actor, Action: "rotation.run", Object: "rotation:" + rot.ID,
			Reason: fmt.Sprintf("%d clients moved", len(done))})
	})
	if err != nil {
		return nil, nil, err
	}
	return done, skipped, nil
}

func insertRotation(ctx context.Context, tx pgx.Tx, rot *Rotation) error {
	return tx.QueryRow(ctx, `INSERT INTO rotations (actor, segment, team, manager_ids) VALUES ($1, $2, $3, $4::uuid[])
		RETURNING id, created_at`, rot.Actor, rot.Segment, rot.Team, nonNil(rot.ManagerIDs)).Scan(&rot.ID, &rot.CreatedAt)
}

// rotateClient moves one client (his partners stay, but for the new
// primary manager) and keeps the move; moved is false when his primary
// manager is no longer m.From.
func rotateClient(ctx context.Context, tx pgx.Tx, rotationID string, m masking.RotationMove, actor string) (moved bool, err error) {
	switch err := lockLiveClient(ctx, tx, m.ClientID); {
	case errors.Is(err, ErrClientErased), errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	var primary string
	var partners []string
	if err := tx.QueryRow(ctx, `SELECT
		coalesce((SELECT manager_id::text FROM assignments WHERE client_id = $1 AND valid_until IS NULL AND kind = 'primary'), ''),
		coalesce((SELECT array_agg(manager_id::text ORDER BY valid_from, id) FROM assignments
			WHERE client_id = $1 AND valid_until IS NULL AND kind = 'partner'), '{}')`, m.ClientID).Scan(&primary, &partners); err != nil {
		return false, err
	}
	if primary != m.From {
		return false, nil
	}
	if err := reassignTx(ctx, tx, m.ClientID, m.To, partners, actor); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO rotation_moves (rotation_id, client_id, from_manager, to_manager) VALUES ($1, $2, $3, $4)`,
		rotationID, m.ClientID, m.From, m.To); err != nil {
		return false, err
	}
	return true, appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "client.reassign", Object: "client:" + m.ClientID,
		Reason: "rotation:" + rotationID + " primary manager:" + m.To})
}

func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

// Rotations lists the newest rotations carried out (at most limit), each
// with its moves.
func (s *Store) Rotations(ctx context.Context, limit int) ([]Rotation, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::text, actor, segment, team, manager_ids::text[], skipped::text[], created_at
		FROM rotations ORDER BY created_at DESC, id LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	rots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Rotation, error) {
		var rot Rotation
		return rot, r.Scan(&rot.ID, &rot.Actor, &rot.Segment, &rot.Team, &rot.ManagerIDs, &rot.Skipped, &rot.CreatedAt)
	})
	if err != nil || len(rots) == 0 {
		return rots, err
	}
	index := map[string]int{}
	ids := make([]string, len(rots))
	for i, r := range rots {
		index[r.ID], ids[i] = i, r.ID
	}
	rows, err = s.pool.Query(ctx, `SELECT rotation_id::text, client_id::text, from_manager::text, to_manager::text
		FROM rotation_moves WHERE rotation_id = ANY($1::uuid[]) ORDER BY rotation_id, client_id`, ids)
	if err != nil {
		return nil, err
	}
	var rid string
	var m masking.RotationMove
	_, err = pgx.ForEachRow(rows, []any{&rid, &m.ClientID, &m.From, &m.To}, func() error {
		rots[index[rid]].Moves = append(rots[index[rid]].Moves, m)
		return nil
	})
	return rots, err
}

// RotationSchedule is a rotation that repeats every EveryDays days.
type RotationSchedule struct {
	ID string
	// Plan is what each run rotates (never a dry run).
	Plan           RotationPlan
	EveryDays      int
	NextRunAt      time.Time
	CreatedBy      string
	CreatedAt      time.Time
	LastRotationID string
}

// CreateRotationSchedule stores a repeating rotation (its segment must
// exist, its managers be active) and audits it (rotation.schedule).
func (s *Store) CreateRotationSchedule(ctx context.Context, sch RotationSchedule, actor string) (RotationSchedule, error) {
	var id string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockActiveManagers(ctx, tx, uniq(sch.Plan.ManagerIDs)); err != nil {
			return err
		}
		if sch.Plan.Segment != "" {
			var ok bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM segments WHERE name = $1)`, sch.Plan.Segment).Scan(&ok); err != nil {
				return err
			}
			if !ok {
				return ErrUnknownSegment
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO rotation_schedules (segment, team, manager_ids, every_days, next_run_at, created_by)
			VALUES ($1, $2, $3::uuid[], $4, $5, $6) RETURNING id`, sch.Plan.Segment, sch.Plan.Team, nonNil(uniq(sch.Plan.ManagerIDs)),
			sch.EveryDays, sch.NextRunAt, actor).Scan(&id); err != nil {
			return fmt.Errorf("storage: rotation schedule: %w", err)
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "rotation.schedule", Object: "rotation_schedule:" + id,
			Reason: fmt.Sprintf("every %d days", sch.EveryDays)})
	})
	if err != nil {
		return RotationSchedule{}, err
	}
	all, err := s.RotationSchedules(ctx)
	for _, r := range all {
		if r.ID == id {
			return r, err
		}
	}
	return RotationSchedule{}, err
}

// RotationSchedules lists the repeating rotations, the next due first.
func (s *Store) RotationSchedules(ctx context.Context) ([]RotationSchedule, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::text, segment, team, manager_ids::text[], every_days, next_run_at, created_by,
		created_at, coalesce(last_rotation_id::text, '') FROM rotation_schedules ORDER BY next_run_at, id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (RotationSchedule, error) {
		var sch RotationSchedule
		return sch, r.Scan(&sch.ID, &sch.Plan.Segment, &sch.Plan.Team, &sch.Plan.ManagerIDs, &sch.EveryDays, &sch.NextRunAt,
			&sch.CreatedBy, &sch.CreatedAt, &sch.LastRotationID)
	})
}

// DeleteRotationSchedule stops a repeating rotation and audits it
// (rotation.unschedule).
func (s *Store) DeleteRotationSchedule(ctx context.Context, id, actor string) error {
	if !validUUID(id) {
		return ErrNotFound
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM rotation_schedules WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "rotation.unschedule", Object: "rotation_schedule:" + id})
	})
}

// RunDueRotations carries out every repeating rotation due at now. Each
// run is claimed first by moving the schedule's next_run_at on (whole
// periods, past now) only if nobody moved it since it was read, so of the
// nodes that run this at once exactly one carries each run out. A run that
// fails is logged by the caller and waits for its next period.
func (s *Store) RunDueRotations(ctx context.Context, now time.Time) ([]Rotation, error) {
	all, err := s.RotationSchedules(ctx)
	if err != nil {
		return nil, err
	}
	var done []Rotation
	var errs []error
	for _, sch := range all {
		if sch.NextRunAt.After(now) {
			continue
		}
		next := sch.NextRunAt
		for !next.After(now) {
			next = next.AddDate(0, 0, sch.EveryDays)
		}
		tag, err := s.pool.Exec(ctx, `UPDATE rotation_schedules SET next_run_at = $3 WHERE id = $1 AND next_run_at = $2`,
			sch.ID, sch.NextRunAt, next)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if tag.RowsAffected() == 0 {
			continue // another node claimed this run
		}
		rot, err := s.Rotate(ctx, sch.Plan, "system:rotation_schedule:"+sch.ID)
		if rot.ID != "" {
			done = append(done, rot)
			if _, err := s.pool.Exec(ctx, `UPDATE rotation_schedules SET last_rotation_id = $2 WHERE id = $1`, sch.ID, rot.ID); err != nil {
				errs = append(errs, err)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rotation schedule %s: %w", sch.ID, err))
		}
	}
	return done, errors.Join(errs...)
}
