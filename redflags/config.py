"""A site's configuration file (TOML): parameter overrides and local terminology, checked strictly.

```toml
[params.guillain_barre_syndrome]
fvc_per_kg_min = 15

[terminology]
valueset_dirs = ["valuesets"]                   # paths relative to this file
conceptmaps = ["local-codes.conceptmap.json"]
```

Every mistake (an unknown section, rule id or parameter, a value that is not a number, a path
that does not exist) is a ``ConfigError`` with one line naming the file: a typo must stop the
run, never silently leave a clinical threshold at its default.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from rulesets import MODULES

#: Environment variable naming the configuration file when ``--config`` is not given.
ENV_VAR = "REDFLAGS_CONFIG"

SECTIONS = frozenset({"params", "terminology"})
TERMINOLOGY_KEYS = frozenset({"valueset_dirs", "conceptmaps"})


class ConfigError(ValueError):
    """The configuration file cannot be used; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class SiteConfig:
    source: Path | None = None
    params: dict[str, dict[str, float]] = field(default_factory=dict)
    valueset_dirs: tuple[Path, ...] = ()
    conceptmaps: tuple[Path, ...] = ()


def defaults(modules: Sequence[ModuleType] = MODULES) -> dict[str, dict[str, float]]:
    """Every overridable parameter, by rule id (as ``Engine`` names them), with its default."""
    out: dict[str, dict[str, float]] = {}
    for module in modules:
        meta = getattr(module, "META", None)
        rule_id = meta.id if meta else module.__name__.rsplit(".", 1)[-1]
        out[rule_id] = dict(getattr(module, "PARAMS", {}))
    return out


def resolve(option: Path | None) -> Path | None:
    """``--config`` wins; otherwise ``$REDFLAGS_CONFIG`` if set and not empty."""
    if option is not None:
        return option
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env) if env else None


def load(path: Path | None, modules: Sequence[ModuleType] = MODULES) -> SiteConfig:
    """Read and check ``path``; ``None`` means no site configuration (every default)."""
    if path is None:
        return SiteConfig()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    _only(path, "section", "", doc, SECTIONS)
    terminology = _table(path, "terminology", doc.get("terminology", {}))
    _only(path, "key", " in [terminology]", terminology, TERMINOLOGY_KEYS)
    return SiteConfig(
        source=path,
        params=_params(path, _table(path, "params", doc.get("params", {})), defaults(modules)),
        valueset_dirs=_paths(path, terminology, "valueset_dirs", want_dir=True),
        conceptmaps=_paths(path, terminology, "conceptmaps", want_dir=False),
    )


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _table(path: Path, where: str, value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _fail(path, f"[{where}] must be a table")
    return value


def _only(path: Path, what: str, where: str, table: Mapping[str, object], allowed: frozenset[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(path, f"unknown {what} {unknown[0]!r}{where} (allowed: {', '.join(sorted(allowed))})")


def _params(
    path: Path, table: Mapping[str, object], known: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for rule_id, values in table.items():
        if rule_id not in known:
            raise _fail(path, f"unknown rule id {rule_id!r} in [params] (known: {', '.join(known)})")
        section = f"params.{rule_id}"
        values = _table(path, section, values)
        _only(path, "parameter", f" in [{section}]", values, frozenset(known[rule_id]))
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise _fail(path, f"[{section}] {name} must be a finite number, got {value!r}")
            out.setdefault(rule_id, {})[name] = value
    return out


def _paths(path: Path, table: Mapping[str, object], name: str, *, want_dir: bool) -> tuple[Path, ...]:
    """Paths relative to the configuration file, each checked to exist now, not mid-replay."""
    entries = table.get(name, [])
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise _fail(path, f"[terminology] {name} must be a list of paths")
    resolved = tuple(path.resolve().parent / entry for entry in entries)
    for entry in resolved:
        if not (entry.is_dir() if want_dir else entry.is_file()):
            raise _fail(path, f"[terminology] {name}: no such {'folder' if want_dir else 'file'} {entry}")
    return resolved
