-- +goose Up
-- Alerts raised by the rules of internal/alerts. dedup_key names the rule,
-- its subject and its window ("client_quiet|client:<id>|<last call id>"):
-- two nodes, or one node evaluating twice, raise an alert once.
CREATE TABLE alerts (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule           text NOT NULL CHECK (rule ~ '^[a-z_]{1,40}$'),
    dedup_key      text NOT NULL UNIQUE,
    client_id      uuid REFERENCES clients (id) ON DELETE SET NULL,
    manager_id     uuid REFERENCES managers (id) ON DELETE SET NULL,
    -- Who the alert is for first (a segment's supervisor), if anyone.
    supervisor_id  uuid REFERENCES managers (id) ON DELETE SET NULL,
    -- The audit actor of an access rule ("manager:<id>", "admin:bootstrap").
    actor          text NOT NULL DEFAULT '',
    -- {"call_ids":[...],"audit_seqs":[...],"figures":{...}}: ids and counts,
    -- never a number or a name.
    evidence       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    acked_by       text,
    acked_at       timestamptz,
    CHECK ((acked_by IS NULL) = (acked_at IS NULL))
);
CREATE INDEX alerts_created ON alerts (created_at DESC);
CREATE INDEX alerts_rule_subject ON alerts (rule, client_id, manager_id, actor, created_at);

-- Where the evaluator has read up to: the audit log by seq, CDRs by
-- updated_at.
CREATE TABLE alert_cursors (
    name        text PRIMARY KEY,
    audit_seq   bigint NOT NULL DEFAULT 0,
    cdr_at      timestamptz NOT NULL DEFAULT '-infinity'
);

-- The access rules count one actor's rows in a window.
CREATE INDEX audit_log_actor_at ON audit_log (actor, at);

-- Webhooks every alert is POSTed to. The signing secret is AES-256-GCM
-- sealed with the encryption key (masking.Keyring.SealSecret): it must be
-- usable to sign, and a database dump alone does not give it away.
CREATE TABLE webhooks (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url                text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    secret_ciphertext  bytea NOT NULL,
    enc_key_id         text NOT NULL,
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per alert and webhook: pending until delivered, dead once the
-- tries are spent (the console's dead letters).
CREATE TABLE webhook_deliveries (
    id           bigserial PRIMARY KEY,
    webhook_id   uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    alert_id     uuid NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT now(),
    last_status  integer NOT NULL DEFAULT 0,
    last_error   text NOT NULL DEFAULT '',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, alert_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (updated_at DESC) WHERE status = 'dead';

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
DROP INDEX audit_log_actor_at;
DROP TABLE alert_cursors;
DROP TABLE alerts;
