"""All SQL of the SQLite adapter: DDL derived from the schema, and every statement."""

from __future__ import annotations

from controller.replication import Schema, Table

__all__ = [
    "FORMAT_VERSION",
    "FORMAT_COMPACTED",
    "FORMATS_READ",
    "PRUNE_CHAIN",
    "PUT_BASE_ROW",
    "SELECT_BASE_ROWS",
    "FORMAT_ARCHIVED",
    "PUT_ARCHIVED",
    "HAS_COMPACTION",
    "HAS_OP",
    "GET_ARCHIVED",
    "SELECT_ARCHIVED",
    "SELECT_ARCHIVED_NEWEST",
    "SELECT_ARCHIVED_AFTER",
    "PRAGMAS",
    "DDL",
    "table_ddl",
    "upsert_row",
    "delete_row",
    "select_rows",
    "GET_META",
    "PUT_META",
    "INSERT_OP",
    "SELECT_LOG",
    "DROP_CHAIN",
    "INSERT_EVIDENCE",
    "SELECT_EVIDENCE",
    "PUT_ROW_META",
    "SELECT_ROW_METAS",
    "CLEAR_ROW_METAS",
    "clear_table",
    "QUICK_CHECK",
    "READ_ONLY_PRAGMA",
    "READ_QUERY_PRAGMAS",
    "SCHEMA_NAMES",
    "USER_FUNCTIONS",
]

FORMAT_VERSION = 1
# A store that was compacted (decision 0070) holds only the tail of its log: an older
# Synod, which would replay it from nothing, must refuse it by its format.
FORMAT_COMPACTED = 2
# A store that moved settled decisions out of its compaction record into _synod_archive
# (decision 0103): an older Synod would not see them and must refuse it.
FORMAT_ARCHIVED = 3
FORMATS_READ = (FORMAT_VERSION, FORMAT_COMPACTED, FORMAT_ARCHIVED)

PRAGMAS = (
    # Pages freed by compaction go back to the file system (incremental_vacuum after each
    # compaction; decision 0102). Takes effect for a new file; SqliteStore(convert=True),
    # the node's own store at start, converts an older one once.
    "PRAGMA auto_vacuum=INCREMENTAL",
    "PRAGMA journal_mode=WAL",
    "PRAGMA journal_size_limit=16777216",  # the WAL shrinks back to 16 MiB after a burst
    "PRAGMA synchronous=FULL",  # a commit is on disk when it returns: 'local' durability
    "PRAGMA foreign_keys=OFF",
)

DDL = (
    "CREATE TABLE IF NOT EXISTS _synod_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _synod_ops ("
    " pos INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, author TEXT NOT NULL,"
    " seq INTEGER NOT NULL, hlc INTEGER NOT NULL, kind TEXT NOT NULL, raw BLOB NOT NULL,"
    " UNIQUE (author, seq))",
    "CREATE TABLE IF NOT EXISTS _synod_evidence ("
    " id BLOB PRIMARY KEY, author TEXT NOT NULL, seq INTEGER NOT NULL, raw BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _synod_rows ("
    " tbl TEXT NOT NULL, pk BLOB NOT NULL, meta BLOB NOT NULL, PRIMARY KEY (tbl, pk))"
    " WITHOUT ROWID",
    # The rows at the checkpoint the log was compacted to, with their ECMH points.
    "CREATE TABLE IF NOT EXISTS _synod_base ("
    " tbl TEXT NOT NULL, pk BLOB NOT NULL, meta BLOB NOT NULL, point BLOB NOT NULL,"
    " PRIMARY KEY (tbl, pk)) WITHOUT ROWID",
    # What a compaction moved out of memory (Compaction.archive): settled decisions, by
    # slot, as certificates (decision 0103).
    # (With a rowid: the order entries came in, for "the newest".)
    "CREATE TABLE IF NOT EXISTS _synod_archive (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
)

_SQL_TYPES = {"int": "INTEGER", "real": "REAL", "text": "TEXT", "blob": "BLOB", "bool": "INTEGER"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_ddl(table: Table) -> str:
    cols = ", ".join(
        f"{_q(c.name)} {_SQL_TYPES[c.type]}" + (" NOT NULL" if c.name in table.primary_key else "")
        for c in table.columns
    )
    pk = ", ".join(_q(k) for k in table.primary_key)
    return f"CREATE TABLE IF NOT EXISTS {_q(table.name)} ({cols}, PRIMARY KEY ({pk}))"


def upsert_row(table: Table) -> str:
    """Parameters: key columns then value columns, in schema order."""
    names = [c.name for c in table.key_columns] + [c.name for c in table.value_columns]
    cols = ", ".join(_q(n) for n in names)
    marks = ", ".join("?" for _ in names)
    return f"INSERT OR REPLACE INTO {_q(table.name)} ({cols}) VALUES ({marks})"


def delete_row(table: Table) -> str:
    where = " AND ".join(f"{_q(k)} = ?" for k in table.primary_key)
    return f"DELETE FROM {_q(table.name)} WHERE {where}"


def select_rows(table: Table) -> str:
    names = [c.name for c in table.key_columns] + [c.name for c in table.value_columns]
    order = ", ".join(_q(k) for k in table.primary_key)
    return f"SELECT {', '.join(_q(n) for n in names)} FROM {_q(table.name)} ORDER BY {order}"


def clear_table(table: Table) -> str:
    return f"DELETE FROM {_q(table.name)}"


def all_ddl(schema: Schema) -> tuple[str, ...]:
    return DDL + tuple(table_ddl(t) for t in schema.tables)


__all__ += ["all_ddl"]

GET_META = "SELECT value FROM _synod_meta WHERE key = ?"
PUT_META = "INSERT OR REPLACE INTO _synod_meta (key, value) VALUES (?, ?)"
INSERT_OP = "INSERT INTO _synod_ops (id, author, seq, hlc, kind, raw) VALUES (?, ?, ?, ?, ?, ?)"
SELECT_LOG = "SELECT raw FROM _synod_ops ORDER BY pos"
DROP_CHAIN = "DELETE FROM _synod_ops WHERE author = ? AND seq >= ?"
INSERT_EVIDENCE = "INSERT OR IGNORE INTO _synod_evidence (id, author, seq, raw) VALUES (?, ?, ?, ?)"
SELECT_EVIDENCE = "SELECT raw FROM _synod_evidence ORDER BY author, seq, id"
PUT_ROW_META = "INSERT OR REPLACE INTO _synod_rows (tbl, pk, meta) VALUES (?, ?, ?)"
SELECT_ROW_METAS = "SELECT tbl, pk, meta FROM _synod_rows"
CLEAR_ROW_METAS = "DELETE FROM _synod_rows"
PRUNE_CHAIN = "DELETE FROM _synod_ops WHERE author = ? AND seq <= ?"
PUT_BASE_ROW = "INSERT OR REPLACE INTO _synod_base (tbl, pk, meta, point) VALUES (?, ?, ?, ?)"
SELECT_BASE_ROWS = "SELECT tbl, pk, meta, point FROM _synod_base ORDER BY tbl, pk"
# Whether a store holds anything (SqliteStore.is_empty, holds_nothing).
HAS_COMPACTION = "SELECT 1 FROM _synod_meta WHERE key = 'compaction'"
HAS_OP = "SELECT 1 FROM _synod_ops LIMIT 1"
PUT_ARCHIVED = "INSERT OR REPLACE INTO _synod_archive (key, value) VALUES (?, ?)"
GET_ARCHIVED = "SELECT value FROM _synod_archive WHERE key = ?"
# Keys with a prefix, in order (the range scan starts at the prefix).
SELECT_ARCHIVED = ("SELECT key, value FROM _synod_archive WHERE key >= ? "
                   "AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?")
SELECT_ARCHIVED_AFTER = ("SELECT key, value FROM _synod_archive WHERE key > ? "
                         "AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?")
SELECT_ARCHIVED_NEWEST = ("SELECT key, value FROM _synod_archive WHERE substr(key, 1, ?) = ? "
                          "ORDER BY rowid DESC LIMIT ?")
QUICK_CHECK = "PRAGMA quick_check"
READ_ONLY_PRAGMA = "PRAGMA query_only=ON"

# Users' read-only SQL (ReadOnlyQuery): its connection's memory stays small (2 MiB page
# cache; sorts and temporary b-trees spill to a temporary file, not to RAM; no mmap).
READ_QUERY_PRAGMAS = (
    READ_ONLY_PRAGMA,
    "PRAGMA cache_size=-2048",
    "PRAGMA temp_store=FILE",
    "PRAGMA mmap_size=0",
)
SCHEMA_NAMES = "SELECT name FROM sqlite_master UNION SELECT name FROM sqlite_temp_master"

# The SQL functions users' queries may call (the authorizer's SQLITE_FUNCTION gives the
# name). Not here, so refused: printf/format (in SQLite 3.40 '%.*c' loops over its
# precision whatever the length limit: 9 s for one call), fts3_tokenizer (a memory
# address), load_extension, sqlite_* introspection, changes/last_insert_rowid, FTS, R-tree.
USER_FUNCTIONS = frozenset(
    # scalar
    "abs char coalesce concat concat_ws glob hex ifnull iif instr length like likelihood"
    " likely lower ltrim max min nullif octet_length quote random randomblob replace round"
    " rtrim sign soundex substr substring trim typeof unhex unicode unlikely upper zeroblob"
    # aggregate and window
    " avg count group_concat string_agg sum total row_number rank dense_rank percent_rank"
    " cume_dist ntile lag lead first_value last_value nth_value"
    # date and time
    " date time datetime julianday unixepoch strftime timediff current_date current_time"
    " current_timestamp"
    # math
    " acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log"
    " log10 log2 mod pi pow power radians sin sinh sqrt tan tanh trunc"
    # JSON
    " json json_array json_array_length json_error_position json_extract json_insert"
    " json_object json_patch json_quote json_remove json_replace json_set json_type"
    " json_valid json_group_array json_group_object -> ->>".split()
)
