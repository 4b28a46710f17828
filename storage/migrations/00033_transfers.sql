-- +goose Up
-- A call part that a transfer to a colleague began names the part before
-- it (the client's conversation with the transferring manager): one CDR and
-- one recording per manager's part, linked. No foreign key: the CDR writer
-- applies events in any order, so the earlier part's row may come later.
ALTER TABLE cdrs ADD COLUMN transferred_from uuid CHECK (transferred_from <> call_id);
CREATE INDEX cdrs_transferred_from ON cdrs (transferred_from) WHERE transferred_from IS NOT NULL;

-- +goose Down
DROP INDEX cdrs_transferred_from;
ALTER TABLE cdrs DROP COLUMN transferred_from;
