"""What differs between the store's databases, in one place: the write-transaction statement, the
parameter placeholder and the column types of the schema. The migrations are written with ``$id``
(an auto-numbered primary key) and ``$real`` (a float column); queries with ``?`` placeholders."""

from __future__ import annotations

from dataclasses import dataclass, field
from string import Template

__all__ = ["POSTGRES", "SQLITE", "Dialect"]


@dataclass(frozen=True)
class Dialect:
    name: str
    begin_write: str  # a write transaction that takes the write lock at once
    placeholder: str  # the DB-API paramstyle's marker
    types: dict[str, str] = field(default_factory=dict)

    def ddl(self, sql: str) -> str:
        """A migration's SQL with this database's column types."""
        return Template(sql).substitute(self.types)

    def query(self, sql: str) -> str:
        """A query written with ``?`` placeholders, in this database's paramstyle."""
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)


# the rollups' slot and bucket of a row (migration 14), the same as ``store._rollups`` computes them in
# Python: an hour floored, a latency's log-1.1 bucket (SQLite: a function the store registers on its
# connection, as its math functions are optional), a confidence's twentieth
SQLITE = Dialect("sqlite", "BEGIN IMMEDIATE", "?", {
    "id": "INTEGER PRIMARY KEY", "real": "REAL", "slot_of_started": "(CAST(started_at / 3600 AS INTEGER) * 3600.0)",
    "slot_of_at": "(CAST(at / 3600 AS INTEGER) * 3600.0)", "bucket_of_latency": "turnout_lat_bucket(latency_s)",
    "bucket_of_confidence": "MIN(19, MAX(0, CAST(confidence * 20 AS INTEGER)))",
    "tag_key": "json_extract(tags, '$.key')", "tag_team": "json_extract(tags, '$.team')",
    "slot_of_call": "(CAST(c.started_at / 3600 AS INTEGER) * 3600.0)"})
POSTGRES = Dialect("postgresql", "BEGIN", "%s", {
    "id": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION", "slot_of_started": "(FLOOR(started_at / 3600) * 3600.0)",
    "slot_of_at": "(FLOOR(at / 3600) * 3600.0)", "bucket_of_latency": "CAST(FLOOR(LN(GREATEST(latency_s, 0.0001)) / LN(1.1)) AS INTEGER)",
    "bucket_of_confidence": "LEAST(19, GREATEST(0, CAST(FLOOR(confidence * 20) AS INTEGER)))",
    "tag_key": "(CAST(tags AS JSON) ->> 'key')", "tag_team": "(CAST(tags AS JSON) ->> 'team')",
    "slot_of_call": "(FLOOR(c.started_at / 3600) * 3600.0)"})
