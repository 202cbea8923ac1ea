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


SQLITE = Dialect("sqlite", "BEGIN IMMEDIATE", "?", {"id": "INTEGER PRIMARY KEY", "real": "REAL"})
POSTGRES = Dialect("postgresql", "BEGIN", "%s", {"id": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"})
