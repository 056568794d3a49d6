"""A read-only SQLite query tool for qvl_agent.

The database named by ``QVL_AGENT_SQLITE_DB`` (or given to :func:`make_tools`) is opened through the URI
``file:...?mode=ro``, so SQLite itself refuses every write; on top of that only one ``SELECT`` / ``WITH`` /
``VALUES`` statement is accepted, an authorizer denies anything but reading, values are passed as parameters
(never formatted into the SQL), rows are capped and a query is interrupted after a time limit.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from qvl_agent.hookspecs import hookimpl
from qvl_agent.tools import Tool

__version__ = "0.1.0"

DB_ENV = "QVL_AGENT_SQLITE_DB"
DEFAULT_MAX_ROWS = 100
DEFAULT_TIME_LIMIT = 5.0

_READ_START = re.compile(r"^\s*(select|with|values)\b", re.IGNORECASE)
# actions a read-only query needs (sqlite3 authorizer action codes)
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_ALLOWED_ACTIONS |= {getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


class QueryError(ValueError):
    """The query was refused or failed; the message is what the model reads."""


def connect_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open ``path`` read-only (``mode=ro`` URI); a missing file is an error, never a new empty database."""
    db = Path(path).expanduser().resolve()
    if not db.is_file():
        raise QueryError(f"database {str(db)!r} does not exist")
    connection = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, check_same_thread=False)
    connection.set_authorizer(_authorize)
    return connection


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _check_statement(sql: str) -> str:
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise QueryError("the query is empty")
    if not sqlite3.complete_statement(sql + ";") or ";" in _strip_literals(sql):
        raise QueryError("only one SQL statement is allowed")
    if not _READ_START.match(sql):
        raise QueryError("only read-only queries (SELECT, WITH, VALUES) are allowed")
    return sql


def _strip_literals(sql: str) -> str:
    """``sql`` with string literals, quoted identifiers and comments removed (to look for a second ``;``)."""
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", "", sql, flags=re.DOTALL)


def run_query(
    path: str | os.PathLike[str],
    sql: str,
    params: list[Any] | dict[str, Any] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> dict[str, Any]:
    """Run one read-only query with bound ``params``; returns ``{"columns", "rows", "truncated"}``."""
    sql = _check_statement(sql)
    if params is not None and not isinstance(params, (list, dict)):
        raise QueryError("params must be a list (for ?) or an object (for :name)")
    connection = connect_read_only(path)
    deadline = time.monotonic() + time_limit
    # called every 1000 VM instructions; a non-zero return interrupts the query
    connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        cursor = connection.execute(sql, params if params is not None else [])
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(max_rows + 1)
    except sqlite3.DatabaseError as exc:
        if time.monotonic() > deadline:
            raise QueryError(f"the query took longer than {time_limit} seconds") from None
        message = str(exc)
        if "not authorized" in message or "readonly" in message:
            raise QueryError(f"refused: the database is read-only ({message})") from None
        raise QueryError(f"SQLite error: {message}") from None
    finally:
        connection.close()
    truncated = len(rows) > max_rows
    return {"columns": columns, "rows": [list(r) for r in rows[:max_rows]], "truncated": truncated}


def list_tables(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Table name -> column names."""
    result = run_query(
        path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name", max_rows=1000
    )
    tables: dict[str, list[str]] = {}
    connection = connect_read_only(path)
    try:
        for (name,) in result["rows"]:
            quoted = '"' + name.replace('"', '""') + '"'
            tables[name] = [d[0] for d in connection.execute(f"SELECT * FROM {quoted} LIMIT 0").description]
    finally:
        connection.close()
    return tables


def _to_text(value: Any) -> str:
    return json.dumps(
        value, ensure_ascii=False, default=lambda v: v.hex() if isinstance(v, bytes) else str(v)
    )


def make_tools(
    path: str | os.PathLike[str] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> list[Tool]:
    """The ``sql_query`` and ``sql_tables`` tools for the database at ``path`` (default: ``$QVL_AGENT_SQLITE_DB``,
    read when a tool is called)."""
    lock = threading.Lock()

    def database() -> str:
        db = path if path is not None else os.environ.get(DB_ENV)
        if not db:
            raise QueryError(f"no database configured: set {DB_ENV} to the path of a SQLite file")
        return str(db)

    def sql_query(sql: str, params: list[Any] | dict[str, Any] | None = None) -> str:
        with lock:
            result = run_query(database(), sql, params, max_rows=max_rows, time_limit=time_limit)
        note = f" (first {max_rows} rows only)" if result["truncated"] else ""
        return _to_text(result) + note

    def sql_tables() -> str:
        with lock:
            return _to_text(list_tables(database()))

    return [
        Tool(
            name="sql_query",
            description="Run one read-only SQL query (SELECT) on the SQLite database and return the columns and "
            f"rows (at most {max_rows}). Pass values as params, using ? or :name placeholders.",
            parameters={
                "type": "object",
                "properties": {
                    "sql": {"type": "string", "description": "a single SELECT statement"},
                    "params": {
                        "type": ["array", "object"],
                        "description": "values for the ? (array) or :name (object) placeholders",
                    },
                },
                "required": ["sql"],
            },
            func=sql_query,
            timeout=time_limit + 5,
        ),
        Tool(
            name="sql_tables",
            description="List the tables of the SQLite database with their columns.",
            parameters={"type": "object", "properties": {}},
            func=sql_tables,
            timeout=time_limit + 5,
        ),
    ]


@hookimpl
def register_tools(register: Callable[[Tool], None]) -> None:
    for tool in make_tools():
        register(tool)
