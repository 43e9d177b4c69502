"""A small TOML writer for scenario files.

The standard library reads TOML (tomllib) but does not write it. Scenarios only hold strings, numbers,
booleans, lists of those, tables and arrays of tables, so this writer covers exactly that, and a test checks
that `tomllib.loads(dumps(data)) == data`. Strings are TOML basic strings: backslash and quote escaped, and
every control character (U+0000-U+001F and U+007F, which TOML forbids in strings) written as an escape, so
whatever a scenario's names hold reads back the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def dumps(data: Mapping[str, Any]) -> str:
    """Render nested tables as TOML text: scalars first, then tables, then arrays of tables."""
    lines: list[str] = []
    _write_table(lines, data, [])
    return "\n".join(lines).strip() + "\n"


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, list | tuple) and bool(value) and all(isinstance(item, Mapping) for item in value)
    )


def _is_nested(value: Any) -> bool:
    return isinstance(value, Mapping) or _is_table_array(value)


def _write_table(lines: list[str], table: Mapping[str, Any], path: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping) and not _is_table_array(v)}
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            if not value or any(not _is_nested(v) for v in value.values()):
                lines.extend(["", f"[{'.'.join(_key(k) for k in [*path, key])}]"])
            _write_table(lines, value, [*path, key])
        elif _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{'.'.join(_key(k) for k in [*path, key])}]]"])
                _write_table(lines, item, [*path, key])


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _string(key)


ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in text:
        if ch in ESCAPES:
            out.append(ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if value is None:
        raise TypeError("TOML has no null value")
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
