-- +goose Up
-- Rotations a supervisor carried out, and who got whom (a dry run stores
-- nothing).
CREATE TABLE rotations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    actor       text NOT NULL,
    segment     text NOT NULL DEFAULT '',
    team        text NOT NULL DEFAULT '',
    manager_ids uuid[] NOT NULL DEFAULT '{}',
    skipped     uuid[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rotations_created ON rotations (created_at DESC);

CREATE TABLE rotation_moves (
    rotation_id  uuid NOT NULL REFERENCES rotations (id) ON DELETE CASCADE,
    client_id    uuid NOT NULL REFERENCES clients (id),
    from_manager uuid NOT NULL REFERENCES managers (id),
    to_manager   uuid NOT NULL REFERENCES managers (id),
    PRIMARY KEY (rotation_id, client_id)
);

-- Rotations planned to repeat: every every_days days from next_run_at, run
-- by whichever node claims the run first (compare-and-set on next_run_at).
CREATE TABLE rotation_schedules (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    segment          text NOT NULL DEFAULT '',
    team             text NOT NULL DEFAULT '',
    manager_ids      uuid[] NOT NULL DEFAULT '{}',
    every_days       integer NOT NULL CHECK (every_days BETWEEN 1 AND 365),
    next_run_at      timestamptz NOT NULL,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_rotation_id uuid REFERENCES rotations (id) ON DELETE SET NULL
);

-- +goose Down
DROP TABLE rotation_schedules;
DROP TABLE rotation_moves;
DROP TABLE rotations;
