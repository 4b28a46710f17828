-- +goose Up
-- A segment is an object with rules, no longer only a label: clients keep
-- their segment's name in clients.segment (the API's "segment" field), and
-- the rules live here.
--   restricted: only the managers listed in segment_managers may be primary
--               or partner for its clients (a permission on the manager);
--   supervisor_id, overflow_to_supervisor: an unanswered call ends at the
--               segment supervisor's phone instead of the team;
--   alert_missed: a missed call alerts the supervisor at once;
--   hours_*:    working hours (in the company's time zone) outside which
--               managers may not start calls to its clients; no days means
--               no limit.
CREATE TABLE segments (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                   text NOT NULL UNIQUE CHECK (name <> '' AND length(name) <= 100),
    restricted             boolean NOT NULL DEFAULT false,
    supervisor_id          uuid REFERENCES managers (id),
    overflow_to_supervisor boolean NOT NULL DEFAULT false,
    alert_missed           boolean NOT NULL DEFAULT false,
    hours_days             smallint[] NOT NULL DEFAULT '{}',
    hours_from             time NOT NULL DEFAULT '00:00',
    hours_to               time NOT NULL DEFAULT '24:00',
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (hours_days <@ '{0,1,2,3,4,5,6}'::smallint[]),
    CHECK (hours_from < hours_to)
);

-- The managers permitted to hold a restricted segment's clients.
CREATE TABLE segment_managers (
    segment_id  uuid NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    manager_id  uuid NOT NULL REFERENCES managers (id),
    PRIMARY KEY (segment_id, manager_id)
);
CREATE INDEX segment_managers_manager ON segment_managers (manager_id);

-- Every label in use becomes a segment with no rules: nothing changes for
-- its clients until a supervisor gives it some.
INSERT INTO segments (name) SELECT DISTINCT segment FROM clients WHERE segment <> '';

-- +goose Down
DROP TABLE segment_managers;
DROP TABLE segments;
