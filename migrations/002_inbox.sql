-- JetStream Bridge inbox: the sink records every event it receives here, in the
-- same transaction as the handler's writes, and dedupes on event_id.
-- Idempotent: safe to run again. Names in this file are rewritten by the sink
-- when INBOX_TABLE is not the default.

CREATE TABLE IF NOT EXISTS public.jetstream_inbox_events (
    id                  bigserial   PRIMARY KEY,
    event_id            text        NOT NULL UNIQUE,
    event_type          text,
    resource_type       text,
    resource_id         text,
    payload             jsonb,
    subject             text,
    headers             jsonb,
    stream              text,
    stream_seq          bigint,
    deliveries          integer     NOT NULL DEFAULT 0,
    status              text        NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'processing', 'processed', 'failed', 'dead', 'stale')),
    error_message       text,
    processing_attempts integer     NOT NULL DEFAULT 0,
    commit_lsn          pg_lsn,
    tx_index            integer,
    received_at         timestamptz NOT NULL DEFAULT now(),
    processed_at        timestamptz,
    failed_at           timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS jetstream_inbox_events_stream_seq_key
    ON public.jetstream_inbox_events (stream, stream_seq)
    WHERE stream IS NOT NULL AND stream_seq IS NOT NULL;

CREATE INDEX IF NOT EXISTS jetstream_inbox_events_status_idx
    ON public.jetstream_inbox_events (status)
    WHERE status <> 'processed';

-- The newest applied source position per key and producer, for ordering
-- across sink processes and restarts (SKIP_STALE). Positions are LSNs of the
-- producer's database: those of two databases (two producers behind one
-- wildcard FILTER_SUBJECT, or a source database rebuilt under a new name)
-- cannot be compared, so the producer is part of the key.
CREATE TABLE IF NOT EXISTS public.jetstream_inbox_events_positions (
    resource_type text        NOT NULL,
    resource_id   text        NOT NULL,
    producer      text        NOT NULL DEFAULT '',
    commit_lsn    pg_lsn      NOT NULL,
    tx_index      integer     NOT NULL,
    event_id      text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_type, resource_id, producer)
);

-- Upgrade in place a positions table keyed without the producer: its rows
-- keep producer '' (their producer was never recorded) and the primary key
-- gains the column. Running it again finds the key already upgraded.
ALTER TABLE public.jetstream_inbox_events_positions
    ADD COLUMN IF NOT EXISTS producer text NOT NULL DEFAULT '';
DO $$
DECLARE
    v_pkey name;
BEGIN
    SELECT c.conname INTO v_pkey
    FROM pg_constraint c
    WHERE c.conrelid = 'public.jetstream_inbox_events_positions'::regclass AND c.contype = 'p'
      AND NOT EXISTS (
          SELECT 1 FROM pg_attribute a
          WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) AND a.attname = 'producer');
    IF v_pkey IS NOT NULL THEN
        EXECUTE format('ALTER TABLE public.jetstream_inbox_events_positions DROP CONSTRAINT %I', v_pkey);
        ALTER TABLE public.jetstream_inbox_events_positions
            ADD PRIMARY KEY (resource_type, resource_id, producer);
    END IF;
END
$$;
