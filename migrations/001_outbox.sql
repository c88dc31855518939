-- JetStream Bridge outbox: apps insert one row per event inside their own
-- transaction; the relay streams committed inserts from the WAL to JetStream.
-- Idempotent: safe to run again. Names in this file are rewritten by the relay
-- when OUTBOX_TABLE / PUBLICATION are not the defaults.

CREATE TABLE IF NOT EXISTS public.jetstream_outbox_events (
    id            bigserial   PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    resource_type text        NOT NULL,
    resource_id   text,
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}',
    headers       jsonb       NOT NULL DEFAULT '{}',
    subject       text,
    destination   text,
    trace_id      text,
    occurred_at   timestamptz NOT NULL DEFAULT now()
);

-- Only INSERTs are relayed. Deleting or updating rows never affects delivery.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'jetstream_bridge_outbox') THEN
        CREATE PUBLICATION jetstream_bridge_outbox FOR TABLE public.jetstream_outbox_events
            WITH (publish = 'insert');
    END IF;
END
$$;

-- jetstream_publish enqueues one event and returns its event id. While the
-- sink applies an event it sets jetstream_bridge.applying; events written then
-- are echoes of the other side's changes and are skipped (NULL is returned),
-- so a two-way sync cannot loop. Pass p_force => true to publish anyway.
--
-- Where the event goes is the setting jetstream_bridge.outbox_mode:
-- 'table' (or unset) inserts a row into the outbox table; 'message' writes no
-- row but a transactional logical decoding message, prefixed with the
-- publication's name and holding the row's fields as one JSON object, that
-- reaches the relay in its transaction at its commit (never if it rolls
-- back), costing the writer no heap or index insert and leaving nothing to
-- delete or vacuum. Switch it per database, role or session, at any time:
--     ALTER DATABASE app SET jetstream_bridge.outbox_mode = 'message';
-- the relay always relays both rows and messages.
--
-- The message branch is kept cheap, as it is all a message-mode writer pays
-- beyond its commit: the content is built by json_build_object, which writes
-- text directly (jsonb_build_object would build a binary jsonb value only to
-- print it again), and the message is emitted in an assignment, which
-- PL/pgSQL evaluates as a simple expression without starting an executor for
-- a query as PERFORM does. The payload and headers are printed by jsonb's own
-- output, so the relay reads the same JSON text for them as from a row.
CREATE OR REPLACE FUNCTION public.jetstream_publish(
    p_resource_type text,
    p_event_type    text,
    p_payload       jsonb       DEFAULT '{}',
    p_resource_id   text        DEFAULT NULL,
    p_headers       jsonb       DEFAULT '{}',
    p_subject       text        DEFAULT NULL,
    p_destination   text        DEFAULT NULL,
    p_trace_id      text        DEFAULT NULL,
    p_occurred_at   timestamptz DEFAULT now(),
    p_force         boolean     DEFAULT false
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_event_id uuid;
    v_lsn      pg_lsn;
BEGIN
    IF NOT p_force AND coalesce(current_setting('jetstream_bridge.applying', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    IF current_setting('jetstream_bridge.outbox_mode', true) = 'message' THEN
        IF p_event_type IS NULL THEN -- as the table's NOT NULL would refuse it
            RAISE not_null_violation USING MESSAGE = 'jetstream_publish: event_type must not be null';
        END IF;
        v_event_id := gen_random_uuid();
        v_lsn := pg_logical_emit_message(true, 'jetstream_bridge_outbox', json_build_object(
            'event_id', v_event_id, 'resource_type', coalesce(p_resource_type, ''),
            'resource_id', p_resource_id, 'event_type', p_event_type,
            'payload', coalesce(p_payload, '{}'), 'headers', coalesce(p_headers, '{}'),
            'subject', p_subject, 'destination', p_destination, 'trace_id', p_trace_id,
            'occurred_at', coalesce(p_occurred_at, now()))::text);
        RETURN v_event_id;
    END IF;
    INSERT INTO public.jetstream_outbox_events
        (resource_type, resource_id, event_type, payload, headers, subject, destination, trace_id, occurred_at)
    VALUES
        (coalesce(p_resource_type, ''), p_resource_id, p_event_type, coalesce(p_payload, '{}'),
         coalesce(p_headers, '{}'), p_subject, p_destination, p_trace_id, coalesce(p_occurred_at, now()))
    RETURNING event_id INTO v_event_id;
    RETURN v_event_id;
END
$$;

-- The relay's record of its replication slot: one row when it first sees the
-- slot, and one per automatic recovery (SLOT_RECOVERY=auto) after the slot
-- went missing (a promoted standby, a dropped slot) or was lost
-- (max_slot_wal_keep_size). A slot with a record that is missing on the
-- server is recovered: recreated, and the outbox rows the stream may lack
-- republished. A slot without any record is a first start and backfills
-- nothing. A 'recovering' row not followed by 'recovered' is a recovery that
-- was interrupted after it created the slot: the next relay to start redoes
-- it. The table replicates to standbys with the rest of the database,
-- which is how a promoted standby knows its slot is missing. It lives in the
-- outbox's schema; the relay's role needs SELECT and INSERT on it.
CREATE TABLE IF NOT EXISTS public.jetstream_bridge_slots (
    id               bigserial   PRIMARY KEY,
    slot_name        text        NOT NULL,
    event            text        NOT NULL CHECK (event IN ('created', 'recovering', 'recovered')),
    reason           text,       -- recovering, recovered: missing | lost | dropped
    at               timestamptz NOT NULL DEFAULT now(),
    old_lsn          pg_lsn,     -- recovered: the last position the relay confirmed on the old slot, when known
    new_lsn          pg_lsn,     -- the slot's start: its consistent point, or its confirmed position when first seen
    rows_republished bigint,     -- recovered: outbox rows published again
    marker_event_id  text,       -- recovered: the newest event the stream held from this producer
    duration_ms      bigint,
    host             text        -- the database server the relay was connected to
);
CREATE INDEX IF NOT EXISTS jetstream_bridge_slots_slot_name_idx ON public.jetstream_bridge_slots (slot_name, id);
