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

-- +goose Down
ALTER TABLE cdrs DROP COLUMN mobile;
ALTER TABLE cdrs DROP COLUMN via;
DROP TABLE manager_mobiles;
