package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Task statuses: open until the client's next connected call closes it
// (done) or the client is erased (cancelled).
const (
	TaskOpen      = "open"
	TaskDone      = "done"
	TaskCancelled = "cancelled"
)

// Task is a missed-call task: call the client back. Its owner is whoever is
// the client's primary manager now, so a reassigned client's tasks go to
// his new manager with him.
type Task struct {
	ID         string
	ClientID   string
	ClientName string
	ClientCode string
	CallID     string // the missed call
	ManagerID  string // the client's current primary manager; empty if none
	Status     string
	CreatedAt  time.Time // when the call was missed
	ClosedAt   *time.Time
	// ClosedByCallID is the connected call that closed a done task.
	ClosedByCallID string
}

// TaskFilter narrows tasks; empty fields match everything.
type TaskFilter struct {
	ManagerID     string    // the client's current primary manager
	Status        string    // open, done or cancelled
	CreatedBefore time.Time // only tasks missed before this (overdue ones)
	Limit         int       // default 200, at most 1000
}

// ValidTaskStatus reports whether s names a task status.
func ValidTaskStatus(s string) bool {
	return s == TaskOpen || s == TaskDone || s == TaskCancelled
}

// queueTaskUpdates adds to b what the call events just applied to callIDs'
// CDRs change in the tasks, in the CDRs' transaction so that tasks and CDRs
// commit together; every statement is idempotent, so a batch applied again
// changes nothing. It runs after the CDR upserts: the rows read are the
// merged ones.
func queueTaskUpdates(b *pgx.Batch, callIDs []string) {
	b.Queue(lockTaskClients, callIDs)
	b.Queue(dropAnsweredTasks, callIDs)
	b.Queue(createTasks, callIDs)
	b.Queue(closeTasks, callIDs)
}

// lockTaskClients serialises the task changes of one client across
// writers (several recorder nodes apply events at once): without it a
// missed call applied by one and the call-back applied by another, each
// blind to the other's uncommitted row, would leave the task open. The
// locks are taken in one order, after the CDR rows (the statements before).
const lockTaskClients = `
SELECT count(pg_advisory_xact_lock(k)) FROM (
    SELECT DISTINCT hashtextextended('maskpbx.tasks:' || client_id::text, 0) AS k
    FROM cdrs
    WHERE call_id = ANY($1::uuid[]) AND client_id IS NOT NULL
      AND (answered_at IS NOT NULL OR (direction = 'inbound' AND ended_at IS NOT NULL))
    ORDER BY k) AS l`

// dropAnsweredTasks undoes a task whose call turns out to have been
// answered (its answered event applied after its end).
const dropAnsweredTasks = `
DELETE FROM tasks t USING cdrs c
WHERE c.call_id = ANY($1::uuid[]) AND t.call_id = c.call_id AND c.answered_at IS NOT NULL`

// createTasks makes a task of each inbound call of a known, not erased,
// client that ended without being answered. A connected call with him
// applied before (events may come late) closes it at once.
const createTasks = `
INSERT INTO tasks (call_id, client_id, created_at, status, closed_at, closed_by_call_id)
SELECT c.call_id, c.client_id, c.ended_at, CASE WHEN b.call_id IS NULL THEN 'open' ELSE 'done' END,
       b.answered_at, b.call_id
FROM cdrs c
JOIN clients cl ON cl.id = c.client_id AND cl.erased_at IS NULL
LEFT JOIN LATERAL (
    SELECT n.call_id, n.answered_at FROM cdrs n
    WHERE n.client_id = c.client_id AND n.answered_at >= c.ended_at
    ORDER BY n.answered_at, n.call_id LIMIT 1) AS b ON true
WHERE c.call_id = ANY($1::uuid[]) AND c.direction = 'inbound' AND c.ended_at IS NOT NULL
  AND c.answered_at IS NULL
ORDER BY c.call_id
ON CONFLICT (call_id) DO NOTHING`

// closeTasks closes the client's tasks missed before a connected call, in
// either direction; a task closed by a later call is moved to the earliest
// one, so the outcome does not depend on the order events arrive in.
const closeTasks = `
UPDATE tasks t SET status = 'done', closed_at = x.answered_at, closed_by_call_id = x.call_id
FROM (SELECT DISTINCT ON (o.id) o.id, c.call_id, c.answered_at
      FROM cdrs c JOIN tasks o ON o.client_id = c.client_id
      WHERE c.call_id = ANY($1::uuid[]) AND c.answered_at IS NOT NULL AND c.answered_at >= o.created_at
        AND (o.status = 'open' OR (o.status = 'done' AND c.answered_at < o.closed_at))
      ORDER BY o.id, c.answered_at, c.call_id) AS x
WHERE t.id = x.id`

// cancelClientTasks cancels an erased client's open tasks: nobody is to
// call him back, and he has no manager to do it.
func cancelClientTasks(ctx context.Context, tx pgx.Tx, clientID string) error {
	if _, err := tx.Exec(ctx, `UPDATE tasks SET status = 'cancelled', closed_at = now()
		WHERE client_id = $1 AND status = 'open'`, clientID); err != nil {
		return fmt.Errorf("storage: cancel tasks: %w", err)
	}
	return nil
}

// Tasks lists tasks, newest first.
func (s *Store) Tasks(ctx context.Context, f TaskFilter) ([]Task, error) {
	if f.ManagerID != "" && !validUUID(f.ManagerID) {
		return []Task{}, nil // no row can match an id that is not a uuid
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 200
	}
	limit = min(limit, 1000)
	var before *time.Time
	if !f.CreatedBefore.IsZero() {
		before = &f.CreatedBefore
	}
	rows, err := s.pool.Query(ctx, `
		SELECT t.id, t.client_id, cl.name, cl.code, t.call_id, coalesce(a.manager_id::text, ''), t.status,
		       t.created_at, t.closed_at, coalesce(t.closed_by_call_id::text, '')
		FROM tasks t
		JOIN clients cl ON cl.id = t.client_id
		LEFT JOIN assignments a ON a.client_id = t.client_id AND a.kind = 'primary' AND a.valid_until IS NULL
		WHERE ($1::uuid IS NULL OR a.manager_id = $1::uuid) AND ($2::text IS NULL OR t.status = $2)
		  AND ($3::timestamptz IS NULL OR t.created_at < $3)
		ORDER BY t.created_at DESC, t.id LIMIT $4`, nullUUID(f.ManagerID), nullText(f.Status), before, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: list tasks: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Task, error) {
		var t Task
		err := r.Scan(&t.ID, &t.ClientID, &t.ClientName, &t.ClientCode, &t.CallID, &t.ManagerID, &t.Status,
			&t.CreatedAt, &t.ClosedAt, &t.ClosedByCallID)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: list tasks: %w", err)
	}
	if out == nil {
		out = []Task{}
	}
	return out, nil
}
