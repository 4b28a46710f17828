-- +goose Up
-- Missed-call tasks: every inbound call from a known client that nobody
-- answered is a task "call back" for whoever is the client's primary manager
-- (the owner is not stored: it follows the assignment). One task per missed
-- call (unique call_id, so a CDR applied twice or on two nodes makes one);
-- the client's next connected call, in either direction, closes all his open
-- tasks at once. Missed calls from before this migration make no tasks.
CREATE TABLE tasks (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id            uuid NOT NULL UNIQUE REFERENCES cdrs (call_id) ON DELETE CASCADE,
    client_id          uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    -- When the call was missed (its end): overdue counts from here.
    created_at         timestamptz NOT NULL,
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'cancelled')),
    closed_at          timestamptz,
    -- The connected call that closed a done task; NULL for a cancelled one
    -- (the client was erased).
    closed_by_call_id  uuid,
    CHECK ((status = 'open') = (closed_at IS NULL)),
    CHECK (status = 'done' OR closed_by_call_id IS NULL)
);
CREATE INDEX tasks_client ON tasks (client_id, created_at);
CREATE INDEX tasks_open ON tasks (created_at) WHERE status = 'open';

-- +goose Down
DROP TABLE tasks;
