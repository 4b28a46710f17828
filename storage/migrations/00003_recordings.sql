-- +goose Up
-- One row per recording session, written by the recorder node that holds the
-- audio: first as 'recording' when the session starts, then complete,
-- partial (the recorder died or lost the session mid-call and repaired the
-- file) or missing (no audio survived).
CREATE TABLE recordings (
    id                uuid PRIMARY KEY,
    -- The call as maskpbx names it (events, CDRs). A recording from another
    -- SIPREC client gets an id of its own here and no CDR.
    call_id           uuid NOT NULL,
    client_id         uuid REFERENCES clients (id) ON DELETE SET NULL,
    manager_id        uuid REFERENCES managers (id) ON DELETE SET NULL,
    direction         text CHECK (direction IN ('inbound', 'outbound')),
    source            text NOT NULL CHECK (source IN ('maskpbx', 'siprec')),
    -- The recorder node whose blob store holds the audio, and its key there.
    node              text NOT NULL CHECK (node <> ''),
    blob_key          text NOT NULL CHECK (blob_key <> ''),
    codec             text NOT NULL DEFAULT '',
    status            text NOT NULL CHECK (status IN ('recording', 'complete', 'partial', 'missing')),
    started_at        timestamptz NOT NULL,
    duration_ms       bigint NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    size_bytes        bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    sha256            text NOT NULL DEFAULT '',
    -- RFC 4733 digits seen on either side: [{"digit","side","at_ms","duration_ms"}].
    dtmf              jsonb NOT NULL DEFAULT '[]',
    -- Set when retention deleted the audio; the row stays as the record.
    audio_deleted_at  timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node, blob_key)
);
CREATE INDEX recordings_client ON recordings (client_id, started_at DESC);
CREATE INDEX recordings_manager ON recordings (manager_id, started_at DESC);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_expiry ON recordings (node, started_at) WHERE audio_deleted_at IS NULL;

-- +goose Down
DROP TABLE recordings;
