-- +goose Up
CREATE TABLE managers (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (name <> ''),
    sip_username  text NOT NULL UNIQUE CHECK (sip_username ~ '^[A-Za-z0-9._-]{1,64}$'),
    -- Only digests of the SIP password (RFC 7616 HA1), never the password.
    ha1_md5       text NOT NULL,
    ha1_sha256    text NOT NULL,
    team          text NOT NULL DEFAULT '',
    role          text NOT NULL DEFAULT 'manager' CHECK (role IN ('manager', 'supervisor', 'admin')),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'dismissed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    dismissed_at  timestamptz
);

CREATE TABLE clients (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code        text NOT NULL UNIQUE CHECK (code ~ '^[0-9]{6,12}$'),
    name        text NOT NULL CHECK (name <> ''),
    segment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A client's numbers: AES-256-GCM ciphertext plus a keyed blind index for
-- caller-ID lookup. Key ids let both keys rotate.
CREATE TABLE client_phones (
    id            bigserial PRIMARY KEY,
    client_id     uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    ciphertext    bytea NOT NULL,
    enc_key_id    text NOT NULL,
    blind_index   bytea NOT NULL,
    index_key_id  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (index_key_id, blind_index)
);
CREATE INDEX client_phones_client ON client_phones (client_id);

-- Assignment history: a row is current while valid_until is null.
CREATE TABLE assignments (
    id           bigserial PRIMARY KEY,
    client_id    uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    manager_id   uuid NOT NULL REFERENCES managers (id),
    kind         text NOT NULL CHECK (kind IN ('primary', 'partner')),
    valid_from   timestamptz NOT NULL DEFAULT now(),
    valid_until  timestamptz,
    changed_by   text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX assignments_one_primary ON assignments (client_id) WHERE kind = 'primary' AND valid_until IS NULL;
CREATE UNIQUE INDEX assignments_current ON assignments (client_id, manager_id) WHERE valid_until IS NULL;
CREATE INDEX assignments_by_manager ON assignments (manager_id) WHERE valid_until IS NULL;

CREATE TABLE api_tokens (
    token_hash  bytea PRIMARY KEY,
    manager_id  uuid NOT NULL REFERENCES managers (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_tokens_manager ON api_tokens (manager_id);

-- Append-only, hash-chained: hash = sha256(prev_hash || canonical row).
CREATE TABLE audit_log (
    seq        bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    object     text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    prev_hash  bytea NOT NULL,
    hash       bytea NOT NULL
);

-- +goose StatementBegin
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- +goose Down
DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
DROP TABLE api_tokens;
DROP TABLE assignments;
DROP TABLE client_phones;
DROP TABLE clients;
DROP TABLE managers;
