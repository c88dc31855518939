-- Partitioned sinks (PARTITIONS=N): who owns which partition, and which sink
-- processes are alive. Created in the inbox table's schema, only when the sink
-- runs with PARTITIONS. Idempotent.

-- One row per (durable, partition). A claim bumps epoch; every apply
-- transaction of the owner checks (durable, partition, owner, epoch) with
-- FOR SHARE just before it commits, so a takeover (an UPDATE of the row)
-- waits for applies in flight and fences every later one.
CREATE TABLE IF NOT EXISTS public.jetstream_bridge_partitions (
  durable     text        NOT NULL,
  partition   integer     NOT NULL,
  owner       text        NOT NULL DEFAULT '',    -- member name; '' when free
  epoch       bigint      NOT NULL DEFAULT 0,
  clean       boolean     NOT NULL DEFAULT true,  -- released with everything it fetched acked
  released_at timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (durable, partition)
);

-- One row per live sink process; a member whose lease has passed is gone.
CREATE TABLE IF NOT EXISTS public.jetstream_bridge_members (
  durable     text        NOT NULL,
  member      text        NOT NULL,
  lease_until timestamptz NOT NULL,
  joined_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (durable, member)
);
