-- 0001: users, the table the demo and the tests read through the cache.
-- Applied once, inside a transaction, by the migrator (recorded in schema_migrations).

CREATE TABLE users (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL,
    email      text        NOT NULL UNIQUE,
    updated_at timestamptz NOT NULL DEFAULT now()
);
