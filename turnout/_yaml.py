"""YAML files at the edge: parse, reject duplicate keys, and turn pydantic errors into file:line: field messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ._errors import ConfigError

__all__ = ["decode_utf8", "json_line", "jsonl_objects", "line_of", "load_model", "load_yaml", "located_error"]

MAX_DEPTH = 64          # nesting a configuration or an input line may have
MAX_NODES = 100_000     # values a YAML document may expand to, aliases included (an alias bomb is refused)


def decode_utf8(data: bytes, where: str | Path, *, first_line: int = 1) -> str:
    """``data`` as text, or a ConfigError naming the line and column of the first invalid byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{where}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {col})") from None


def _check_tree(root: Any, path: Path) -> None:
    """Duplicate keys, nesting depth and expanded size (aliases counted where they expand), in one
    pass that visits each node once: an alias bomb or a deep document is refused, never expanded."""
    size: dict[int, int] = {}
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        nid = id(node)
        if done:
            kids = [v for kv in node.value for v in (kv if isinstance(node, yaml.MappingNode) else (kv,))]
            size[nid] = 1 + sum(size.get(id(k), 1) for k in kids)
            if size[nid] > MAX_NODES:
                raise ConfigError(f"{path}:{node.start_mark.line + 1}: the document expands to more than {MAX_NODES:,} values "
                                  "(nested aliases?); refused")
            continue
        if nid in size or not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            size.setdefault(nid, 1)
            continue
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}:{node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep; refused")
        size[nid] = 1  # visiting: a cycle counts once
        stack.append((node, depth, True))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                key = getattr(k, "value", None)
                if isinstance(key, str):
                    if key in seen:
                        raise ConfigError(f"{path}:{k.start_mark.line + 1}: duplicate key {key!r} (first at line {seen[key]})")
                    seen[key] = k.start_mark.line + 1
                stack.append((v, depth + 1, False))
        else:
            stack.extend((v, depth + 1, False) for v in node.value)


def load_yaml(path: str | Path, *, what: str) -> tuple[Any, Any]:
    """Return (document, node tree). Unreadable, non-UTF-8, invalid, duplicate-keyed, too deep or
    alias-bombed files are ConfigErrors naming the file and line."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the {what}: {e.strerror}") from None
    text = decode_utf8(data, p)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None, None
        _check_tree(root, p)
        loader = yaml.SafeLoader("")
        try:
            doc = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to read; refused") from None
    return doc, root


def json_line(raw: str, loads: Callable[[str], Any] = json.loads) -> Any:
    """One JSON document from a line; ValueError (with ``msg``) for invalid or too deeply nested JSON.
    ``loads`` is the stdlib's by default (integers of any size stay exact); the gateway passes
    orjson's (``turnout._json.loads``: 64-bit integers, about 2x faster)."""
    try:
        doc = loads(raw)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    if _depth(doc) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return doc


def _depth(doc: Any) -> int:
    """How deeply ``doc``'s lists and objects nest (a scalar is 0), counted up to ``MAX_DEPTH`` + 1:
    one level at a time, only containers kept (4x faster than visiting every value)."""
    level = [doc] if isinstance(doc, (dict, list)) else []
    n = 0
    while level and n <= MAX_DEPTH:
        n += 1
        level = [x for d in level for x in (d.values() if isinstance(d, dict) else d) if isinstance(x, (dict, list))]
    return n


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


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "literal"}


def _field_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The YAML path of a pydantic error location: the tags pydantic adds for the member of a union
    it tried (``StepIn``, ``str``, ``function-after[_one_kind(), StepIn]``) are not fields."""
    def tag(x: Any) -> bool:
        return isinstance(x, str) and ("[" in x or x in _TYPE_TAGS or (x[:1].isupper() and x.endswith("In") and x.isidentifier()))
    return tuple(x for x in loc if not tag(x))


def located_error(path: str | Path, root: Any, err: ValidationError, prefix: tuple[Any, ...] = (),
                  model: type[BaseModel] | None = None) -> ConfigError:
    e = err.errors()[0]
    loc = _field_path((*prefix, *e["loc"]))
    where = ".".join(str(x) for x in loc)
    msg = str(e["msg"]).removeprefix("Value error, ")
    f = model.model_fields.get(str(e["loc"][0])) if model is not None and len(e["loc"]) == 1 else None
    if e["type"] == "missing" and f is not None and f.description:
        msg = f"missing: {f.description}"
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
        raise located_error(p, root, e, model=model) from None


def jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; unreadable files, invalid JSON
    and non-object lines are ConfigErrors naming the file and line."""
    p = Path(path)
    try:
        lines = decode_utf8(p.read_bytes(), p).splitlines()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json_line(line)
        except ValueError as e:
            raise ConfigError(f"{p}:{n}: not valid JSON: {getattr(e, 'msg', e)}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{p}:{n}: each line must be a JSON object")
        yield n, doc
