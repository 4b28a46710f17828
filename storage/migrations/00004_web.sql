-- +goose Up
-- Web console sign-in. A person is a managers row (any role); his web
-- password is kept apart from his SIP digests, and only as a password hash
-- (argon2id or bcrypt, in its own self-describing format).
CREATE TABLE web_accounts (
    manager_id     uuid PRIMARY KEY REFERENCES managers (id) ON DELETE CASCADE,
    password_hash  text NOT NULL CHECK (password_hash <> ''),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Console sessions. The cookie holds a random token; only its SHA-256 is
-- stored. A session is live while it is neither revoked nor expired and its
-- manager is active, so a dismissal ends it at once. A session of the
-- bootstrap admin (MASKPBX_ADMIN_TOKEN) has no manager row: it keeps the
-- SHA-256 of the token it was opened with and dies when that token changes.
CREATE TABLE web_sessions (
    token_hash      bytea PRIMARY KEY,
    manager_id      uuid REFERENCES managers (id) ON DELETE CASCADE,
    bootstrap_hash  bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    source          text NOT NULL DEFAULT '',
    CHECK ((manager_id IS NULL) = (bootstrap_hash IS NOT NULL))
);
CREATE INDEX web_sessions_manager ON web_sessions (manager_id) WHERE revoked_at IS NULL;
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- Failed sign-ins, counted per username and per source address so that
-- every node of a cluster applies the same limit. The audit log keeps the
-- permanent record; these rows are pruned after a day.
CREATE TABLE web_signin_failures (
    id        bigserial PRIMARY KEY,
    username  text NOT NULL,
    source    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX web_signin_failures_user ON web_signin_failures (username, at);
CREATE INDEX web_signin_failures_source ON web_signin_failures (source, at);

-- +goose Down
DROP TABLE web_signin_failures;
DROP TABLE web_sessions;
DROP TABLE web_accounts;
