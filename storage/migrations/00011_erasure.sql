-- +goose Up
-- A client's right to erasure: an erased client keeps his row (CDRs and
-- recordings point at it) under a pseudonym, without numbers. A legal hold,
-- set by an admin, keeps his recordings' audio through erasure and
-- retention alike.
ALTER TABLE clients ADD COLUMN erased_at timestamptz;
ALTER TABLE clients ADD COLUMN legal_hold boolean NOT NULL DEFAULT false;
-- The recordings whose audio an erasure still has to delete.
CREATE INDEX recordings_audio_kept ON recordings (client_id) WHERE audio_deleted_at IS NULL;

-- +goose Down
DROP INDEX recordings_audio_kept;
ALTER TABLE clients DROP COLUMN legal_hold;
ALTER TABLE clients DROP COLUMN erased_at;
