"""YAML files at the edge: parse, reject duplicate keys, and turn pydantic errors into file:line: field messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ._errors import ConfigError

__all__ = ["jsonl_objects", "line_of", "load_model", "load_yaml", "located_error"]


def _check_unique(node: Any, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = getattr(k, "value", None)
            if isinstance(key, str):
                if key in seen:
                    raise ConfigError(f"{path}:{k.start_mark.line + 1}: duplicate key {key!r} (first at line {seen[key]})")
                seen[key] = k.start_mark.line + 1
            _check_unique(v, path)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            _check_unique(v, path)


def load_yaml(path: str | Path, *, what: str) -> tuple[Any, Any]:
    """Return (document, node tree). Unreadable, invalid or duplicate-keyed files are ConfigErrors."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the {what}: {e.strerror}") from None
    try:
        root = yaml.compose(text)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    _check_unique(root, p)
    return doc, root


def line_of(node: Any, path: tuple[Any, ...]) -> int | None:
    """1-based line of the node at ``path`` (as deep as it exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def located_error(path: str | Path, root: Any, err: ValidationError, prefix: tuple[Any, ...] = ()) -> ConfigError:
    e = err.errors()[0]
    loc = (*prefix, *e["loc"])
    where = ".".join(str(x) for x in loc)
    msg = str(e["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{path}:{line_of(root, loc)}: {where}: {msg}")


M = TypeVar("M", bound=BaseModel)


def load_model(path: str | Path, model: type[M], *, what: str, hint: str) -> tuple[M, Any]:
    """A YAML mapping validated by ``model``: (the model, the node tree); errors as file:line: field."""
    p = Path(path)
    doc, root = load_yaml(p, what=what)
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}:1: {hint}")
    try:
        return model.model_validate(doc), root
    except ValidationError as e:
        raise located_error(p, root, e) from None


def jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; unreadable files, invalid JSON
    and non-object lines are ConfigErrors naming the file and line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as e:
            raise ConfigError(f"{p}:{n}: not valid JSON: {getattr(e, 'msg', e)}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{p}:{n}: each line must be a JSON object")
        yield n, doc
