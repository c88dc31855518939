-- JetStream Bridge demo schema: the business tables of the two-system example
-- (system_a and system_b each hold organizations and users and sync them both
-- ways), the triggers that publish local writes, and the sink's SQL handler.
--
-- Apply it to both databases AFTER the outbox schema (migrations/001_outbox.sql,
-- which creates public.jetstream_publish) and the inbox schema
-- (migrations/002_inbox.sql). Idempotent: safe to run again.
--
-- This is the canonical copy: cmd/demo embeds it, docker-compose.yml mounts it.
--
--   psql "$DATABASE_URL" -f migrations/001_outbox.sql -f migrations/002_inbox.sql -f cmd/demo/schema.sql
--
-- How two-way sync avoids loops: the triggers call jetstream_publish(), which
-- returns NULL and writes no outbox row while jetstream_bridge.applying is set.
-- The sink sets it (transaction-local) around the handler, so the rows
-- demo.apply_event writes are not published back to the side they came from.

CREATE SCHEMA IF NOT EXISTS demo;

CREATE TABLE IF NOT EXISTS demo.organizations (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL,
    domain     text        NOT NULL UNIQUE,
    active     boolean     NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- organization_id has no foreign key on purpose: the sink keeps the order of
-- events per (resource_type, resource_id) only, so a user can be applied before
-- the organization created just before it on the other side.
CREATE TABLE IF NOT EXISTS demo.users (
    id              uuid        PRIMARY KEY,
    organization_id uuid        NOT NULL,
    name            text        NOT NULL,
    email           text        NOT NULL UNIQUE,
    role            text        NOT NULL DEFAULT 'member',
    active          boolean     NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- publish_change publishes the new row as the event payload. TG_ARGV[0] is the
-- resource type. Inside the sink's transaction jetstream_publish() does nothing.
CREATE OR REPLACE FUNCTION demo.publish_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.jetstream_publish(
        TG_ARGV[0],
        CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END,
        to_jsonb(NEW),
        NEW.id::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS organizations_publish ON demo.organizations;
CREATE TRIGGER organizations_publish
    AFTER INSERT OR UPDATE ON demo.organizations
    FOR EACH ROW EXECUTE FUNCTION demo.publish_change('organization');

DROP TRIGGER IF EXISTS users_publish ON demo.users;
CREATE TRIGGER users_publish
    AFTER INSERT OR UPDATE ON demo.users
    FOR EACH ROW EXECUTE FUNCTION demo.publish_change('user');

-- apply_event is the sink's handler (HANDLER=sql:demo.apply_event). It gets the
-- whole envelope and upserts the row in its payload, last writer wins: an event
-- replaces the local row only when it is newer by updated_at. Equal timestamps
-- are broken by comparing the other columns, so both sides pick the same winner
-- and converge whatever order events arrive in.
--
-- Errors: an unknown resource_type raises SQLSTATE JBDLQ and a malformed value
-- (bad uuid, bad timestamp) a data exception (class 22); the sink dead-letters
-- both at once. Anything else (a unique violation, a lock timeout) is retried
-- with BACKOFF.
CREATE OR REPLACE FUNCTION demo.apply_event(event jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := event -> 'payload';
BEGIN
    CASE event ->> 'resource_type'
    WHEN 'organization' THEN
        INSERT INTO demo.organizations AS o (id, name, domain, active, updated_at)
        VALUES ((p ->> 'id')::uuid, p ->> 'name', p ->> 'domain', (p ->> 'active')::boolean,
                (p ->> 'updated_at')::timestamptz)
        ON CONFLICT (id) DO UPDATE
            SET name = EXCLUDED.name, domain = EXCLUDED.domain, active = EXCLUDED.active,
                updated_at = EXCLUDED.updated_at
            WHERE (EXCLUDED.updated_at, EXCLUDED.name, EXCLUDED.domain, EXCLUDED.active)
                > (o.updated_at, o.name, o.domain, o.active);
    WHEN 'user' THEN
        INSERT INTO demo.users AS u (id, organization_id, name, email, role, active, updated_at)
        VALUES ((p ->> 'id')::uuid, (p ->> 'organization_id')::uuid, p ->> 'name', p ->> 'email',
                p ->> 'role', (p ->> 'active')::boolean, (p ->> 'updated_at')::timestamptz)
        ON CONFLICT (id) DO UPDATE
            SET organization_id = EXCLUDED.organization_id, name = EXCLUDED.name, email = EXCLUDED.email,
                role = EXCLUDED.role, active = EXCLUDED.active, updated_at = EXCLUDED.updated_at
            WHERE (EXCLUDED.updated_at, EXCLUDED.organization_id, EXCLUDED.name, EXCLUDED.email,
                   EXCLUDED.role, EXCLUDED.active)
                > (u.updated_at, u.organization_id, u.name, u.email, u.role, u.active);
    ELSE
        RAISE EXCEPTION 'demo.apply_event: unknown resource_type %', coalesce(event ->> 'resource_type', '(none)')
            USING ERRCODE = 'JBDLQ';
    END CASE;
END
$$;
