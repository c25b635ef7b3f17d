"""The PostgreSQL schema as numbered migrations, applied on open.

A plain ordered list of (name, SQL) rather than sqlite-utils' ``Migrations``: PostgreSQL runs
DDL inside transactions, so the whole list applies in one transaction under an advisory lock
(two clients opening a new database together: one migrates, the other waits and finds
nothing left to do), and a failure leaves the database exactly as it was.

The tables mirror the SQLite store's (magray/store.py) column for column, so that the
repository methods, export and backup see the same rows. Differences, each for a reason:

* ``embedding`` is pgvector's ``vector`` (float32, normalised; the truth, as in SQLite). Its
  HNSW indexes are per layer and made once the dimension is recorded (see
  ``PostgresStore.ensure_vector_index``): an index needs a fixed dimension, a new memory has
  none yet. The embedding cache keeps ``bytea``: it is only ever read back, never searched.
* ``tags`` is ``jsonb`` (a sorted array of strings), so a tag filter uses a GIN index.
* Keyword search: ``words`` (a tsvector) and ``word_count``, kept by a trigger, split the text
  where FTS5's unicode61 tokenizer does (every run of letters, digits) with diacritics
  removed (unaccent), no stemming, like ``tokenize='unicode61 remove_diacritics 2'``;
  ``fts_stats`` holds what BM25 needs across the table (rows, words).
* Timestamps stay fixed-width ISO 8601 text: they compare as strings exactly as in SQLite,
  and records move between the engines unchanged. They, the hashes and the paths are
  ``COLLATE "C"`` (byte order, as SQLite's BINARY), whatever the database's locale.
"""

from __future__ import annotations

MIGRATIONS_TABLE = "magray_migrations"
MIGRATE_LOCK = 0x6D6167_7261_7901  # advisory lock key while migrating ("magray" + 1)

M001_RECORDS = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS unaccent;

CREATE FUNCTION magray_words(body text) RETURNS tsvector
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple', unaccent(regexp_replace(body, '[^[:alnum:]]+', ' ', 'g')))
$$;

CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE records (
    id bigint PRIMARY KEY,                 -- from records_id_seq: never reused (index keys)
    text text NOT NULL,
    layer text NOT NULL,
    kind text,
    tags jsonb NOT NULL DEFAULT '[]',      -- array of strings, sorted, unique
    project text,
    session text,
    created_at text COLLATE "C" NOT NULL,              -- fixed-width ISO 8601 UTC
    updated_at text COLLATE "C" NOT NULL,
    last_access text COLLATE "C",
    access_count integer NOT NULL DEFAULT 0,
    importance double precision NOT NULL DEFAULT 0,
    content_hash text COLLATE "C" NOT NULL,
    embedding vector NOT NULL,             -- float32, normalised
    pending_embedding vector,              -- optimize --reembed's next vector
    words tsvector NOT NULL DEFAULT '',    -- keyword search (trigger-kept)
    word_count integer NOT NULL DEFAULT 0
);
CREATE SEQUENCE records_id_seq OWNED BY records.id;
ALTER TABLE records ALTER COLUMN id SET DEFAULT nextval('records_id_seq');
CREATE UNIQUE INDEX records_layer_hash ON records(layer, content_hash);
CREATE INDEX records_layer_created ON records(layer, created_at);
CREATE INDEX records_project ON records(project) WHERE project IS NOT NULL;
CREATE INDEX records_session ON records(session) WHERE session IS NOT NULL;
CREATE INDEX records_words ON records USING gin(words);
CREATE INDEX records_tags ON records USING gin(tags jsonb_path_ops);

CREATE TABLE fts_stats (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    rows bigint NOT NULL,
    words bigint NOT NULL
);
INSERT INTO fts_stats VALUES (true, 0, 0);

CREATE TABLE index_log (
    seq bigserial PRIMARY KEY,
    layer text NOT NULL,
    record_id bigint NOT NULL
);
CREATE INDEX index_log_layer_seq ON index_log(layer, seq);

CREATE TABLE embed_cache (
    model text NOT NULL,
    text_hash text COLLATE "C" NOT NULL,
    vector bytea NOT NULL,                 -- float32 little-endian, as in SQLite
    last_used text COLLATE "C" NOT NULL,
    PRIMARY KEY (model, text_hash)
);
CREATE INDEX embed_cache_last_used ON embed_cache(last_used);

CREATE TABLE ops (
    id bigserial PRIMARY KEY,
    op text NOT NULL,
    finished_at text COLLATE "C" NOT NULL,
    seconds double precision NOT NULL,
    items integer NOT NULL,
    cache_hits integer NOT NULL,
    cache_misses integer NOT NULL
);
CREATE INDEX ops_op ON ops(op, id);
CREATE TABLE op_totals (
    op text PRIMARY KEY,
    count bigint NOT NULL,
    seconds double precision NOT NULL,
    items bigint NOT NULL,
    cache_hits bigint NOT NULL,
    cache_misses bigint NOT NULL
);

CREATE TABLE trash (
    id bigint PRIMARY KEY,                 -- the record's own id
    text text NOT NULL,
    layer text NOT NULL,
    kind text,
    tags jsonb NOT NULL DEFAULT '[]',
    project text,
    session text,
    created_at text COLLATE "C" NOT NULL,
    updated_at text COLLATE "C" NOT NULL,
    last_access text COLLATE "C",
    access_count integer NOT NULL DEFAULT 0,
    importance double precision NOT NULL DEFAULT 0,
    content_hash text COLLATE "C" NOT NULL,
    embedding vector NOT NULL,
    model text,
    trashed_at text COLLATE "C" NOT NULL,
    reason text NOT NULL,
    merged_into bigint
);
CREATE INDEX trash_trashed_at ON trash(trashed_at);

CREATE TABLE passages (
    record_id bigint NOT NULL,
    ordinal integer NOT NULL,
    start integer NOT NULL,
    "end" integer NOT NULL,
    embedding vector NOT NULL,
    pending_embedding vector,
    PRIMARY KEY (record_id, ordinal)
);
CREATE TABLE sources (
    record_id bigint NOT NULL,
    path text COLLATE "C" NOT NULL,
    line_start integer NOT NULL,
    line_end integer NOT NULL,
    body_at integer NOT NULL DEFAULT 0,
    file_hash text NOT NULL,
    PRIMARY KEY (record_id, path)
);
CREATE INDEX sources_path ON sources(path);

-- The SQLite store's triggers, one function per event.
CREATE FUNCTION records_words() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.words := magray_words(NEW.text);
    NEW.word_count := (SELECT coalesce(sum(array_length(positions, 1)), 0)
                       FROM unnest(NEW.words));
    RETURN NEW;
END $$;
CREATE TRIGGER records_words BEFORE INSERT OR UPDATE OF text ON records
    FOR EACH ROW EXECUTE FUNCTION records_words();

-- Inserts and deletes are handled per statement, from their transition tables: a COPY of
-- thousands of records updates the BM25 totals' one row once, not once per record.
CREATE FUNCTION records_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO index_log(layer, record_id) SELECT layer, id FROM inserted ORDER BY id;
    UPDATE fts_stats SET rows = rows + s.n, words = words + s.w
    FROM (SELECT count(*) AS n, coalesce(sum(word_count), 0) AS w FROM inserted) s
    WHERE s.n > 0;
    RETURN NULL;
END $$;
CREATE TRIGGER records_insert AFTER INSERT ON records REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION records_inserted();

CREATE FUNCTION records_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO index_log(layer, record_id) SELECT layer, id FROM deleted ORDER BY id;
    UPDATE fts_stats SET rows = rows - s.n, words = words - s.w
    FROM (SELECT count(*) AS n, coalesce(sum(word_count), 0) AS w FROM deleted) s
    WHERE s.n > 0;
    -- a trashed record keeps its passages and sources (a restore brings it back whole)
    DELETE FROM passages p USING deleted d WHERE p.record_id = d.id
        AND NOT EXISTS (SELECT 1 FROM trash t WHERE t.id = d.id);
    DELETE FROM sources s USING deleted d WHERE s.record_id = d.id
        AND NOT EXISTS (SELECT 1 FROM trash t WHERE t.id = d.id);
    RETURN NULL;
END $$;
CREATE TRIGGER records_delete AFTER DELETE ON records REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION records_deleted();

CREATE FUNCTION records_text_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fts_stats SET words = words - OLD.word_count + NEW.word_count;
    DELETE FROM passages WHERE record_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER records_text AFTER UPDATE OF text ON records
    FOR EACH ROW EXECUTE FUNCTION records_text_changed();

CREATE FUNCTION records_vector_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO index_log(layer, record_id) VALUES (OLD.layer, OLD.id);
    IF NEW.layer <> OLD.layer THEN
        INSERT INTO index_log(layer, record_id) VALUES (NEW.layer, NEW.id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER records_vector AFTER UPDATE OF layer, embedding ON records
    FOR EACH ROW EXECUTE FUNCTION records_vector_changed();

CREATE FUNCTION trash_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM records WHERE id = OLD.id) THEN
        DELETE FROM passages WHERE record_id = OLD.id;
        DELETE FROM sources WHERE record_id = OLD.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER trash_parts_delete AFTER DELETE ON trash
    FOR EACH ROW EXECUTE FUNCTION trash_deleted();
"""

# (name, SQL), applied in order; a name, once released, never changes meaning. The SQLite
# store reached its shape in six steps (m001..m006); a PostgreSQL memory starts at that shape.
MIGRATIONS: list[tuple[str, str]] = [
    ("m001_records", M001_RECORDS),
]


def pending(conn) -> list[str]:
    """The migrations this database has not had (all of them for a new one)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (MIGRATIONS_TABLE,)
                          ).fetchone()[0]
    applied = set()
    if exists:
        applied = {row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}
    return [name for name, _ in MIGRATIONS if name not in applied]


def migrate(conn, store_id: str) -> list[str]:
    """Apply the pending migrations in one transaction; what was applied. ``conn`` is in
    autocommit mode; concurrent callers serialise on an advisory lock and re-check."""
    if not pending(conn):
        return []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
                     "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        todo = pending(conn)
        for name, sql in MIGRATIONS:
            if name in todo:
                conn.execute(sql)
                conn.execute(f"INSERT INTO {MIGRATIONS_TABLE}(name) VALUES (%s)", (name,))
        conn.execute("INSERT INTO meta VALUES ('store_id', %s) ON CONFLICT (key) DO NOTHING",
                     (store_id,))
    return todo
