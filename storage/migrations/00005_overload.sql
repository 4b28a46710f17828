-- +goose Up
-- A call the node refused at admission because it was at capacity (503 with
-- Retry-After) still gets its CDR, with its own disposition.
ALTER TABLE cdrs DROP CONSTRAINT cdrs_disposition_check;
ALTER TABLE cdrs ADD CONSTRAINT cdrs_disposition_check
    CHECK (disposition IN ('answered', 'missed', 'busy', 'rejected', 'failed', 'cancelled', 'no_answer', 'overload'));

-- +goose Down
ALTER TABLE cdrs DROP CONSTRAINT cdrs_disposition_check;
ALTER TABLE cdrs ADD CONSTRAINT cdrs_disposition_check
    CHECK (disposition IN ('answered', 'missed', 'busy', 'rejected', 'failed', 'cancelled', 'no_answer'));
