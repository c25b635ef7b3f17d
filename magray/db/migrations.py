"""The schema: numbered migrations, applied in order when a database is opened.

Each migration is a function of the connection, declared in order with ``@migration``.
Which ones a database has had is recorded in the table ``_sqlite_migrations``, in the
format sqlite-utils' ``Migrations`` wrote it (magray used that class until the schema
moved here): a database made by any earlier magray opens unchanged, nothing applied twice.
Plain SQL does the bookkeeping, so opening a database imports nothing (sqlite-utils cost a
tenth of a second of start-up, and was used for nothing else).
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from typing import Callable, Iterable

SET = "magray"  # the migration set (sqlite-utils' name for a group of migrations)
TABLE = "_sqlite_migrations"
# The table exactly as sqlite-utils 4 creates it (an older one, keyed on (migration_set,
# name) without an id, is read and written just as well).
CREATE_TABLE = (f'CREATE TABLE "{TABLE}" (\n   "id" INTEGER PRIMARY KEY,\n'
                '   "migration_set" TEXT,\n   "name" TEXT,\n   "applied_at" TEXT\n)')
CREATE_INDEX = (f'CREATE UNIQUE INDEX "idx_{TABLE}_migration_set_name"\n'
                f'    ON "{TABLE}" ("migration_set", "name")')

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(function: Migration) -> Migration:
    """Declare the next migration (in source order; its name is the function's)."""
    MIGRATIONS.append(function)
    return function


def names() -> list[str]:
    """Every migration this magray knows, in order."""
    return [function.__name__ for function in MIGRATIONS]


def applied(conn: sqlite3.Connection) -> set[str]:
    """The migrations a database has had (none for a new one)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (TABLE,)).fetchone():
        return set()
    return {row[0] for row in conn.execute(
        f"SELECT name FROM {TABLE} WHERE migration_set = ?", (SET,))}


def pending(conn: sqlite3.Connection) -> list[str]:
    """The migrations a database still needs, in order."""
    done = applied(conn)
    return [name for name in names() if name not in done]


def apply(conn: sqlite3.Connection, *, stop_before: str | Iterable[str] = ()) -> None:
    """Apply the pending migrations, inside the caller's write transaction (each recorded
    as it is applied); ``stop_before``: leave that one and those after it pending (tests
    build the databases older magrays made)."""
    stop = {stop_before} if isinstance(stop_before, str) else set(stop_before)
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (TABLE,)).fetchone():
        conn.execute(CREATE_TABLE)
        conn.execute(CREATE_INDEX)
    todo = set(pending(conn))
    for function in MIGRATIONS:
        if function.__name__ in stop:
            return
        if function.__name__ in todo:
            function(conn)
            conn.execute(f"INSERT INTO {TABLE} (migration_set, name, applied_at) "
                         "VALUES (?, ?, ?)", (SET, function.__name__,
                                              str(datetime.datetime.now(datetime.timezone.utc))))


def _script(conn: sqlite3.Connection, sql: str) -> None:
    """Run the statements of ``sql`` one by one: ``executescript`` would first COMMIT the
    caller's transaction, leaving a half-migrated database possible after a crash."""
    statement = ""
    for piece in sql.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                conn.execute(statement)
            statement = ""


@migration
def m001_records(db: sqlite3.Connection) -> None:
    _script(db, """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids are index keys
        text TEXT NOT NULL,
        layer TEXT NOT NULL,
        kind TEXT,
        tags TEXT NOT NULL DEFAULT '[]',       -- JSON array, sorted, unique
        project TEXT,
        session TEXT,
        created_at TEXT NOT NULL,              -- fixed-width ISO 8601 UTC
        updated_at TEXT NOT NULL,
        last_access TEXT,
        access_count INTEGER NOT NULL DEFAULT 0,
        importance REAL NOT NULL DEFAULT 0,
        content_hash TEXT NOT NULL,
        embedding BLOB NOT NULL                -- float32, normalised
    );
    CREATE UNIQUE INDEX records_layer_hash ON records(layer, content_hash);
    CREATE INDEX records_layer_created ON records(layer, created_at);
    CREATE INDEX records_project ON records(project) WHERE project IS NOT NULL;
    CREATE INDEX records_session ON records(session) WHERE session IS NOT NULL;

    CREATE TABLE index_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        layer TEXT NOT NULL,
        record_id INTEGER NOT NULL
    );
    CREATE INDEX index_log_layer_seq ON index_log(layer, seq);

    CREATE VIRTUAL TABLE records_fts USING fts5(
        text, content='records', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );

    CREATE TRIGGER records_insert AFTER INSERT ON records BEGIN
        INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
        INSERT INTO index_log(layer, record_id) VALUES (new.layer, new.id);
    END;
    CREATE TRIGGER records_delete AFTER DELETE ON records BEGIN
        INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO index_log(layer, record_id) VALUES (old.layer, old.id);
    END;
    CREATE TRIGGER records_text AFTER UPDATE OF text ON records BEGIN
        INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER records_vector AFTER UPDATE OF layer, embedding ON records BEGIN
        INSERT INTO index_log(layer, record_id) VALUES (old.layer, old.id);
        INSERT INTO index_log(layer, record_id) SELECT new.layer, new.id
            WHERE new.layer <> old.layer;
    END;

    CREATE TABLE embed_cache (
        model TEXT NOT NULL,
        text_hash TEXT NOT NULL,
        vector BLOB NOT NULL,
        last_used TEXT NOT NULL,
        PRIMARY KEY (model, text_hash)
    ) WITHOUT ROWID;
    """)


@migration
def m002_ops(db: sqlite3.Connection) -> None:
    # Figures magray keeps about itself for `magray status`: the recent operations (a bounded
    # window, for latency percentiles and the cache hit rate) and running totals (counters).
    # The index on embed_cache lets status count cache entries without reading the vectors.
    _script(db, """
    CREATE TABLE ops (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL,                      -- 'store' or 'search'
        finished_at TEXT NOT NULL,             -- fixed-width ISO 8601 UTC
        seconds REAL NOT NULL,                 -- wall time of the call
        items INTEGER NOT NULL,                -- texts given to store / hits returned
        cache_hits INTEGER NOT NULL,           -- embedding-cache lookups that hit
        cache_misses INTEGER NOT NULL          -- ... and that had to run the model
    );
    CREATE INDEX ops_op ON ops(op, id);
    CREATE TABLE op_totals (
        op TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        seconds REAL NOT NULL,
        items INTEGER NOT NULL,
        cache_hits INTEGER NOT NULL,
        cache_misses INTEGER NOT NULL
    );
    CREATE INDEX embed_cache_last_used ON embed_cache(last_used);
    """)


@migration
def m003_pending_embedding(db: sqlite3.Connection) -> None:
    # `magray optimize --reembed` writes each record's new vector here, batch by batch, and
    # swaps them all in at the end: a kill mid-way loses nothing, a rerun continues, and
    # readers meanwhile still see one consistent vector space.
    db.execute("ALTER TABLE records ADD COLUMN pending_embedding BLOB")


@migration
def m004_trash(db: sqlite3.Connection) -> None:
    # What forget, expiry, eviction and merges remove waits here for trash_days before
    # `magray clean` purges it. A trashed record leaves `records` (so search, list, export
    # and the indexes never see it, through the same triggers as a delete) but keeps its id:
    # AUTOINCREMENT never issues that id again, so a restore puts it back unchanged. The
    # vector stays too, with the model that made it, so a restore needs no re-embedding.
    _script(db, """
    CREATE TABLE trash (
        id INTEGER PRIMARY KEY,                -- the record's own id
        text TEXT NOT NULL,
        layer TEXT NOT NULL,
        kind TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        project TEXT,
        session TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_access TEXT,
        access_count INTEGER NOT NULL DEFAULT 0,
        importance REAL NOT NULL DEFAULT 0,
        content_hash TEXT NOT NULL,
        embedding BLOB NOT NULL,
        model TEXT,                            -- meta model_key when it was trashed
        trashed_at TEXT NOT NULL,              -- fixed-width ISO 8601 UTC
        reason TEXT NOT NULL,                  -- forgotten, expired, evicted, merged
        merged_into INTEGER                    -- the record a merge kept, if any
    );
    CREATE INDEX trash_trashed_at ON trash(trashed_at);
    """)


@migration
def m005_repair_text(db: sqlite3.Connection) -> None:
    # magray up to 0.1.0 accepted a tag holding a lone surrogate (JSON Lines "a\ud800"),
    # kept as that escape in the tags JSON; read back, it made every export and --json
    # listing of the memory fail. Each one becomes U+FFFD, the replacement character. (Other
    # columns cannot hold one: sqlite3 refuses to bind such a string.)
    from ..controls import has_surrogate, without_surrogates

    for table in ("records", "trash"):
        rows = db.execute(f"SELECT id, tags FROM {table} WHERE instr(lower(tags), '\\ud') > 0"
                          ).fetchall()
        for record_id, tags in rows:
            values = json.loads(tags)
            if any(has_surrogate(tag) for tag in values):
                repaired = sorted({without_surrogates(tag) for tag in values})
                db.execute(f"UPDATE {table} SET tags = ? WHERE id = ?",
                           (json.dumps(repaired), record_id))


@migration
def m006_passages(db: sqlite3.Connection) -> None:
    # A text longer than the model's window is embedded in overlapping passages. The record
    # keeps the vector of its first window in `embedding`; `passages` holds every passage
    # (ordinal 0 repeats that vector) with its character span, and the layer's index holds
    # the record's id once per vector (usearch multi=True). `sources` says which file and
    # lines a record was ingested from (`magray ingest`), with the hashes that let a re-run
    # skip what did not change. Both follow their record out of the database, but not into
    # the trash: a trashed record keeps them, so that `trash restore` brings it back whole
    # (its passages into the index, its file link), and they go when the trash is emptied.
    _script(db, """
    CREATE TABLE passages (
        record_id INTEGER NOT NULL,
        ordinal INTEGER NOT NULL,
        start INTEGER NOT NULL,                -- character span in the record's text
        end INTEGER NOT NULL,
        embedding BLOB NOT NULL,               -- float32, normalised
        pending_embedding BLOB,
        PRIMARY KEY (record_id, ordinal)
    ) WITHOUT ROWID;
    CREATE TABLE sources (
        record_id INTEGER NOT NULL,
        path TEXT NOT NULL,                    -- absolute path of the file
        line_start INTEGER NOT NULL,           -- the section's lines in the file, from 1
        line_end INTEGER NOT NULL,
        body_at INTEGER NOT NULL DEFAULT 0,    -- where the file's text starts in the record's
        file_hash TEXT NOT NULL,
        PRIMARY KEY (record_id, path)
    ) WITHOUT ROWID;
    CREATE INDEX sources_path ON sources(path);
    CREATE TRIGGER records_parts_delete AFTER DELETE ON records
    WHEN NOT EXISTS (SELECT 1 FROM trash WHERE id = old.id) BEGIN
        DELETE FROM passages WHERE record_id = old.id;
        DELETE FROM sources WHERE record_id = old.id;
    END;
    CREATE TRIGGER trash_parts_delete AFTER DELETE ON trash
    WHEN NOT EXISTS (SELECT 1 FROM records WHERE id = old.id) BEGIN
        DELETE FROM passages WHERE record_id = old.id;
        DELETE FROM sources WHERE record_id = old.id;
    END;
    CREATE TRIGGER records_parts_text AFTER UPDATE OF text ON records BEGIN
        DELETE FROM passages WHERE record_id = old.id;
    END;
    """)
