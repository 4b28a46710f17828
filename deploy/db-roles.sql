-- Database roles for running maskpbx without superuser rights.
--
-- Run once as a superuser (or a role with CREATEROLE that owns the database),
-- connected to maskpbx's database, before the first `maskpbx migrate`:
--     psql -d maskpbx -f deploy/db-roles.sql
--     psql -d maskpbx -c "ALTER ROLE maskpbx_owner PASSWORD '...'" -c "ALTER ROLE maskpbx_app PASSWORD '...'"
--
-- maskpbx_owner owns the database and every table: `maskpbx migrate
-- --database-url postgres://maskpbx_owner@.../maskpbx` runs as it.
-- maskpbx_app is what `maskpbx serve`, `pbx` and `recorder` connect as. It
-- may read and write rows but owns nothing, so it cannot ALTER TABLE
-- audit_log DISABLE TRIGGER, drop the table, or TRUNCATE it: the audit log
-- stays append-only for the running service. Neither role is a superuser
-- (a superuser can always switch triggers off; the keyed, anchored chain is
-- what catches that).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'maskpbx_owner') THEN
        CREATE ROLE maskpbx_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'maskpbx_app') THEN
        CREATE ROLE maskpbx_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    EXECUTE format('ALTER DATABASE %I OWNER TO maskpbx_owner', current_database());
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO maskpbx_app', current_database());
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO maskpbx_owner;
GRANT USAGE ON SCHEMA public TO maskpbx_app;

-- Tables and sequences the owner creates from now on (every migration).
-- No TRUNCATE, REFERENCES or TRIGGER: the app changes rows, not tables.
ALTER DEFAULT PRIVILEGES FOR ROLE maskpbx_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO maskpbx_app;
ALTER DEFAULT PRIVILEGES FOR ROLE maskpbx_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO maskpbx_app;
