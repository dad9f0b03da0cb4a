"""Config input that cannot exhaust memory, and messages that cannot flood a terminal.

Why: a 261-byte YAML "billion laughs" (anchors whose aliases repeat one another) under
`data.tickers` took 61 s and 1.93 GB and printed a 452 MB error message: PyYAML builds an alias as
a shared reference (cheap), but validating the value walked every expanded copy, and the error
echoed them all; one more level was ~9x that.

How: `load_yaml` reads with PyYAML's safe loader, then counts the nodes of the value with every
alias expanded, each shared node counted once (linear in the document, whatever the expansion),
and refuses past MAX_NODES (a phase config has a few hundred nodes; the longest list, a phase's
tickers, ~150) as well as recursive aliases, nesting past MAX_DEPTH and files past MAX_BYTES.
`short` cuts a value's text to a fixed length, saying how much was left out; `bounded_lines`
caps a whole message, so an error prints a bounded amount whatever the input.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1024 * 1024  # a config file; the shipped ones are ~10 KB
MAX_NODES = 100_000  # values after alias expansion
MAX_DEPTH = 100  # nesting of mappings and lists
LIMIT = 200  # characters of one value in a message
MAX_LINES = 30  # lines of one message
MAX_LINE = 500  # characters of one line of it


class InputTooLarge(ValueError):
    """A config document whose value is too large or too deep once its aliases are expanded."""


def short(value: object, limit: int = LIMIT, _depth: int = 0) -> str:
    """`repr(value)` (a str as is) cut to about `limit` characters, saying how much was cut. A
    container is not rendered whole first: only as many items as fill `limit`, then its size."""
    if isinstance(value, list | tuple | dict | set | frozenset):
        return _container(value, limit, _depth)
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _container(value: list | tuple | dict | set | frozenset, limit: int, depth: int) -> str:
    kind = type(value).__name__
    if depth > 3:
        return f"<{kind} of {len(value):,}>"
    items = iter(value.items()) if isinstance(value, dict) else iter(value)
    parts: list[str] = []
    used = 0
    for item in items:
        if used > limit:
            break
        if isinstance(value, dict):
            k, v = item
            part = f"{_item(k, limit, depth)}: {_item(v, limit, depth)}"
        else:
            part = _item(item, limit, depth)
        parts.append(part)
        used += len(part) + 2
    text = ", ".join(parts)
    if len(parts) == len(value) and len(text) <= limit:
        left, right = BRACKETS.get(type(value), "{}")
        return f"{left}{text}{right}"
    return f"{text[:limit]}... ({kind} of {len(value):,} items)"


BRACKETS = {list: "[]", tuple: "()"}


def _item(v: object, limit: int, depth: int) -> str:
    """An item inside a container: strings quoted, as a repr shows them."""
    return short(repr(v) if isinstance(v, str) else v, limit, depth + 1)


def short_repr(value: object, limit: int = LIMIT) -> str:
    """`short`, with a string quoted as `repr` shows it (a value inside a message)."""
    return short(repr(value) if isinstance(value, str) else value, limit)


def bounded_lines(text: str) -> str:
    """`text` with at most MAX_LINES lines of at most MAX_LINE characters each."""
    lines = text.splitlines() or [""]
    out = [short(line, MAX_LINE) for line in lines[:MAX_LINES]]
    if len(lines) > MAX_LINES:
        out.append(f"  ... {len(lines) - MAX_LINES:,} more lines")
    return "\n".join(out)


def expanded_size(value: Any) -> int:
    """Nodes of `value` with every shared (aliased) node counted each time it is referenced;
    InputTooLarge past MAX_NODES or MAX_DEPTH, or for a value that contains itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(v: Any, depth: int) -> int:
        if not isinstance(v, dict | list):
            return 1
        if depth > MAX_DEPTH:
            raise InputTooLarge(f"nested more than {MAX_DEPTH} levels deep")
        key = id(v)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise InputTooLarge("an alias refers to a value that contains it (recursive)")
        active.add(key)
        children = [*v.keys(), *v.values()] if isinstance(v, dict) else v
        n = 1
        for child in children:
            n += size(child, depth + 1)
            if n > MAX_NODES:
                raise InputTooLarge(
                    f"more than {MAX_NODES:,} values once its aliases (*name) are expanded"
                )
        active.discard(key)
        sizes[key] = n
        return n

    return size(value, 0)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, refused (InputTooLarge) when the text passes MAX_BYTES or its
    value, aliases expanded, passes MAX_NODES / MAX_DEPTH. yaml.YAMLError for bad syntax;
    ValueError for a scalar PyYAML cannot build (a date like 2024-13-45)."""
    if len(text) > MAX_BYTES:
        raise InputTooLarge(f"{len(text):,} characters; a config file may hold {MAX_BYTES:,}")
    try:
        value = yaml.safe_load(text)
    except RecursionError:
        raise InputTooLarge(f"nested more than {MAX_DEPTH} levels deep") from None
    expanded_size(value)
    return value
