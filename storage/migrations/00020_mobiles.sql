-- +goose Up
-- A manager's corporate mobile: sealed and blind-indexed exactly like a
-- client's number (AES-256-GCM ciphertext, keyed HMAC index), with the
-- policy that says when the ring plan rings it. One mobile per manager; one
-- manager per mobile (the caller-ID lookup of a call in must be unique).
CREATE TABLE manager_mobiles (
    manager_id    uuid PRIMARY KEY REFERENCES managers (id),
    ciphertext    bytea NOT NULL,
    enc_key_id    text NOT NULL,
    blind_index   bytea NOT NULL,
    index_key_id  text NOT NULL,
    policy        text NOT NULL CHECK (policy IN ('off', 'together', 'after', 'only')),
    after_s       integer NOT NULL DEFAULT 0 CHECK (after_s BETWEEN 0 AND 600),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (index_key_id, blind_index)
);

-- A call whose manager side was his mobile says so, and how the mobile that
-- answered the ring ended its press-1 whisper.
ALTER TABLE cdrs ADD COLUMN via text CHECK (via IN ('mobile'));
ALTER TABLE cdrs ADD COLUMN mobile text CHECK (mobile IN ('accepted', 'declined', 'timed_out'));

-- Alias numbers: a pool of DIDs on the trunk. Each (manager, client) pair
-- gets a sticky alias the manager's mobile is rung from and can call back;
-- a row holds a number's current (released_at null) or last pair. When the
-- pair ends (reassignment, dismissal) it is released at once and not given
-- to another pair before quarantine_until. Aliases are the company's own
-- public numbers, not client data: they are stored as they are.
CREATE TABLE alias_numbers (
    number            text PRIMARY KEY CHECK (number ~ '^\+[0-9]{6,15}$'),
    manager_id        uuid REFERENCES managers (id),
    client_id         uuid REFERENCES clients (id) ON DELETE SET NULL,
    assigned_at       timestamptz,
    released_at       timestamptz,
    quarantine        interval NOT NULL DEFAULT '0',
    quarantine_until  timestamptz
);
CREATE UNIQUE INDEX alias_numbers_pair ON alias_numbers (manager_id, client_id) WHERE released_at IS NULL;

-- +goose Down
DROP TABLE alias_numbers;
ALTER TABLE cdrs DROP COLUMN mobile;
ALTER TABLE cdrs DROP COLUMN via;
DROP TABLE manager_mobiles;
