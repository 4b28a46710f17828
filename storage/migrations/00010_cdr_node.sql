-- +goose Up
-- The pbx node handling each call, so a node that restarts (or, with
-- several nodes, a survivor) can close the calls a dead node left open,
-- with hang-up side node_lost.
ALTER TABLE cdrs ADD COLUMN node text;
ALTER TABLE cdrs DROP CONSTRAINT cdrs_hangup_side_check;
ALTER TABLE cdrs ADD CONSTRAINT cdrs_hangup_side_check
    CHECK (hangup_side IN ('client', 'manager', 'system', 'node_lost'));
CREATE INDEX cdrs_open ON cdrs (node) WHERE ended_at IS NULL;

-- +goose Down
DROP INDEX cdrs_open;
ALTER TABLE cdrs DROP CONSTRAINT cdrs_hangup_side_check;
ALTER TABLE cdrs ADD CONSTRAINT cdrs_hangup_side_check
    CHECK (hangup_side IN ('client', 'manager', 'system'));
ALTER TABLE cdrs DROP COLUMN node;
