-- +goose Up
-- One row per call, built from call events that may arrive in any order and
-- more than once; each column is filled by the event that knows it.
CREATE TABLE cdrs (
    call_id      uuid PRIMARY KEY,
    direction    text CHECK (direction IN ('inbound', 'outbound')),
    -- A CDR outlives the people in it, and an event naming an unknown id
    -- still makes a CDR: the id is then NULL.
    client_id    uuid REFERENCES clients (id) ON DELETE SET NULL,
    manager_id   uuid REFERENCES managers (id) ON DELETE SET NULL,
    offered_at   timestamptz,
    ringing_at   timestamptz,
    answered_at  timestamptz,
    ended_at     timestamptz,
    duration_ms  bigint GENERATED ALWAYS AS (
        CASE WHEN answered_at IS NOT NULL AND ended_at IS NOT NULL
             THEN greatest(0, floor(extract(epoch FROM ended_at - answered_at) * 1000))::bigint
        END) STORED,
    disposition  text CHECK (disposition IN ('answered', 'missed', 'busy', 'rejected', 'failed', 'cancelled', 'no_answer')),
    hangup_side  text CHECK (hangup_side IN ('client', 'manager', 'system')),
    recording    text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cdrs_client ON cdrs (client_id);
CREATE INDEX cdrs_manager ON cdrs (manager_id);
CREATE INDEX cdrs_offered ON cdrs (offered_at);

-- Every event applied to cdrs, so a redelivered event changes nothing.
CREATE TABLE cdr_events (
    event_id  text PRIMARY KEY,
    call_id   uuid NOT NULL,
    kind      text NOT NULL,
    at        timestamptz NOT NULL
);
CREATE INDEX cdr_events_call ON cdr_events (call_id);

-- +goose Down
DROP TABLE cdr_events;
DROP TABLE cdrs;
