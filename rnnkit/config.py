"""Configuration: dataclasses resolved from defaults, then a TOML file, then command-line flags.

Each task describes its settings as dataclasses (model, data, training). This module turns any set
of them into ``--kebab-case`` flags, reads ``[section]`` or flat keys from a TOML file, rejects keys
it does not know (naming the file and the key), and gives the resolved values back as dataclasses
and as a plain dict for ``config.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from rnnkit.errors import DataError

__all__ = [
    "add_dataclass_flags",
    "field_meta",
    "option",
    "from_dict",
    "read_config_file",
    "resolve",
    "to_dict",
]


def field_meta(help_text: str, choices=None, cli: bool = True) -> dict[str, Any]:
    """Metadata of a config dataclass field: its ``--flag`` help, allowed values, and whether it
    is a flag at all (``cli=False``: resolved from the data and saved in config.json instead)."""
    meta: dict[str, Any] = {"help": help_text}
    if choices:
        meta["choices"] = choices
    if not cli:
        meta["cli"] = False
    return meta


def option(default: Any, help_text: str, choices=None, cli: bool = True) -> Any:
    """A config dataclass field with its ``default`` and :func:`field_meta`: what every option
    of a task or training config is declared with, ``name: type = option(default, "help")``."""
    return dataclasses.field(default=default, metadata=field_meta(help_text, choices, cli))


def _base_type(tp) -> tuple[type, bool]:
    """(the concrete type behind an annotation, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _fields(cls) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        out[f.name] = f
    return out


def _parse_value(raw: str, tp):
    base, optional = _base_type(tp)
    if optional and raw.lower() in ("none", "null", ""):
        return None
    if base is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true/false, got {raw!r}")
    if base in (int, float, str):
        try:
            return base(raw)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected {base.__name__}, got {raw!r}") from e
    return raw


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, section: str) -> None:
    """Add one ``--flag`` per field of dataclass ``cls``; values land in ``section.field``."""
    group = parser.add_argument_group(f"{section} options")
    for name, f in _fields(cls).items():
        if name.startswith("_") or f.metadata.get("cli") is False:
            continue
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        base, _ = _base_type(f.type)
        help_text = f"{help_text} (default: {default!r})".strip()
        dest = f"{section}.{name}"
        if base is bool:
            group.add_argument(
                flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                dest=dest,
                default=argparse.SUPPRESS,
                metavar=base.__name__.upper(),
                type=lambda raw, tp=f.type: _parse_value(raw, tp),
                help=help_text,
                choices=f.metadata.get("choices"),
            )


def read_config_file(path: str | Path, sections: dict[str, type]) -> dict[str, dict[str, Any]]:
    """Read a TOML config: ``[model]``/``[data]``/``[train]`` tables, or flat keys.

    A flat key goes to the section whose dataclass has a field of that name. Unknown keys and
    tables are errors that name the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    out: dict[str, dict[str, Any]] = {s: {} for s in sections}
    field_sets = {s: set(_fields(cls)) for s, cls in sections.items()}
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in sections:
                raise DataError(
                    f"{path}: unknown table [{key}]; expected one of {sorted(sections)}"
                )
            for k, v in value.items():
                k = k.replace("-", "_")
                if k not in field_sets[key]:
                    raise DataError(f"{path}: unknown key {k!r} in [{key}]")
                out[key][k] = v
        else:
            k = key.replace("-", "_")
            owners = [s for s, names in field_sets.items() if k in names]
            if not owners:
                raise DataError(f"{path}: unknown key {k!r}")
            out[owners[0]][k] = value
    return out


def resolve(
    namespace: argparse.Namespace,
    sections: dict[str, type],
    config_file: str | Path | None = None,
    defaults: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build each section's dataclass: defaults (the dataclass's, then ``defaults``, e.g. a
    task's own training defaults) ← config file ← flags present on the command line."""
    values: dict[str, dict[str, Any]] = {s: dict((defaults or {}).get(s, {})) for s in sections}
    if config_file:
        for s, kv in read_config_file(config_file, sections).items():
            values[s].update(kv)
    for dest, value in vars(namespace).items():
        if "." in dest:
            s, k = dest.split(".", 1)
            if s in values:
                values[s][k] = value
    return {
        s: from_dict(cls, values[s], where=str(config_file or "command line"))
        for s, cls in sections.items()
    }


def to_dict(obj) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def from_dict(cls, data: dict[str, Any], where: str = "config"):
    """Dataclass from a dict, checking names and coercing numbers (TOML ints for float fields).

    TOML has no null, so an optional field also accepts the string ``"none"`` (as the flags do)."""
    fields = _fields(cls)
    kwargs = {}
    for k, v in data.items():
        if k not in fields:
            raise DataError(f"{where}: unknown key {k!r} for {cls.__name__}")
        base, optional = _base_type(fields[k].type)
        if optional and (v is None or (isinstance(v, str) and v.lower() == "none")):
            kwargs[k] = None
        elif base is float and isinstance(v, int) and not isinstance(v, bool):
            kwargs[k] = float(v)
        elif base in (int, float, str, bool) and not isinstance(v, base):
            raise DataError(f"{where}: {k} must be {base.__name__}; got {v!r}")
        else:
            kwargs[k] = v
        choices = fields[k].metadata.get("choices")
        if choices and kwargs[k] not in choices:
            raise DataError(f"{where}: {k} must be one of {list(choices)}; got {kwargs[k]!r}")
    return cls(**kwargs)
