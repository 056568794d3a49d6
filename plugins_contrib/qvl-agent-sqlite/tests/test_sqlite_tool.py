"""Tests of the read-only SQLite tool: queries, parameters, row cap, and every way of trying to write."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import qvl_agent_sqlite as sq


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE fruit (name TEXT, colour TEXT, price REAL)")
        con.executemany(
            "INSERT INTO fruit VALUES (?, ?, ?)",
            [
                ("apple", "red", 0.5),
                ("banana", "yellow", 0.25),
                ("cherry", "red", 0.1),
                ("kiwi", "green", 0.4),
            ],
        )
        con.execute("CREATE TABLE numbers (n INTEGER)")
        con.executemany("INSERT INTO numbers VALUES (?)", [(i,) for i in range(500)])
    con.close()
    return path


def count_fruit(path: Path) -> int:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT count(*) FROM fruit").fetchone()[0]


def test_select_with_positional_and_named_parameters(db: Path) -> None:
    result = sq.run_query(db, "SELECT name FROM fruit WHERE colour = ? ORDER BY name", ["red"])
    assert result == {"columns": ["name"], "rows": [["apple"], ["cherry"]], "truncated": False}
    named = sq.run_query(db, "SELECT count(*) AS n FROM fruit WHERE price < :p", {"p": 0.45})
    assert named["rows"] == [[3]]


def test_parameters_are_never_interpolated(db: Path) -> None:
    injection = "red' OR '1'='1"
    assert sq.run_query(db, "SELECT name FROM fruit WHERE colour = ?", [injection])["rows"] == []


def test_rows_are_capped(db: Path) -> None:
    result = sq.run_query(db, "SELECT n FROM numbers ORDER BY n", max_rows=10)
    assert result["truncated"] and [r[0] for r in result["rows"]] == list(range(10))


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DELETE FROM fruit", "only read-only queries"),
        ("INSERT INTO fruit VALUES ('x', 'y', 1)", "only read-only queries"),
        ("DROP TABLE fruit", "only read-only queries"),
        ("UPDATE fruit SET price = 0", "only read-only queries"),
        ("ATTACH DATABASE ':memory:' AS other", "only read-only queries"),
        ("PRAGMA writable_schema = 1", "only read-only queries"),
        ("SELECT 1; DELETE FROM fruit", "only one SQL statement"),
        ("WITH x AS (SELECT 1) DELETE FROM fruit", "refused"),
        ("WITH x AS (SELECT 1) INSERT INTO fruit SELECT 'a', 'b', 1 FROM x", "refused"),
        ("", "empty"),
    ],
)
def test_writes_are_refused(db: Path, sql: str, message: str) -> None:
    with pytest.raises(sq.QueryError, match=message):
        sq.run_query(db, sql)
    assert count_fruit(db) == 4


def test_a_semicolon_inside_a_string_is_fine(db: Path) -> None:
    assert sq.run_query(db, "SELECT 'a;b' AS s;")["rows"] == [["a;b"]]


def test_sql_errors_and_missing_database_are_clear(db: Path, tmp_path: Path) -> None:
    with pytest.raises(sq.QueryError, match="no such table: nope"):
        sq.run_query(db, "SELECT * FROM nope")
    missing = tmp_path / "missing.db"
    with pytest.raises(sq.QueryError, match="does not exist"):
        sq.run_query(missing, "SELECT 1")
    assert not missing.exists()  # mode=ro never creates a database


def test_long_queries_are_interrupted(db: Path) -> None:
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    with pytest.raises(sq.QueryError, match="longer than 0.2 seconds"):
        sq.run_query(db, slow, time_limit=0.2)


def test_tools_through_the_tool_runner(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = {t.name: t for t in sq.make_tools(db, max_rows=2)}
    out = tools["sql_query"].run(
        {"sql": "SELECT name, price FROM fruit WHERE price > ? ORDER BY price", "params": [0.2]}
    )
    assert not out.is_error
    body, note = out.content.split(" (", 1)
    assert json.loads(body) == {
        "columns": ["name", "price"],
        "rows": [["banana", 0.25], ["kiwi", 0.4]],
        "truncated": True,
    }
    assert note.startswith("first 2 rows")
    refused = tools["sql_query"].run({"sql": "DELETE FROM fruit"})
    assert refused.is_error and "read-only" in refused.content
    assert json.loads(tools["sql_tables"].run({}).content) == {
        "fruit": ["name", "colour", "price"],
        "numbers": ["n"],
    }
    # the hook's tools read the database from the environment when called
    monkeypatch.delenv(sq.DB_ENV, raising=False)
    registered = []
    sq.register_tools(registered.append)
    assert [t.name for t in registered] == ["sql_query", "sql_tables"]
    assert "no database configured" in registered[0].run({"sql": "SELECT 1"}).content
    monkeypatch.setenv(sq.DB_ENV, str(db))
    assert json.loads(registered[0].run({"sql": "SELECT count(*) FROM fruit"}).content)["rows"] == [[4]]
    assert count_fruit(db) == 4
