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
run, never silently leave a clinical threshold at its default. A number outside the parameter's
plausible range (``PARAM_RANGES`` next to each ruleset's ``PARAMS``: unit, low, high, source) is
a ``ParamOutOfRange`` (exit 2): ``window_days = 0`` would silently switch a rule off. So is a
pair that breaks its declared order (``PARAM_ORDER``: a critical potassium cut-off less extreme
than the urgent one), and an on/off switch (unit ``switch``) given anything but true/false/1/0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.logger import get_logger
from rulesets import MODULES
from rulesets.meta import SWITCH, ParamOrder, ParamRange

#: Environment variable naming the configuration file when ``--config`` is not given.
ENV_VAR = "REDFLAGS_CONFIG"

SECTIONS = frozenset({"params", "terminology"})
TERMINOLOGY_KEYS = frozenset({"valueset_dirs", "conceptmaps"})


class ConfigError(ValueError):
    """The configuration file cannot be used; the message is one line naming the file."""

    exit_code = 1


class ParamOutOfRange(ConfigError):
    """A parameter value outside its plausible range: bad input, so the command's usage exit."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class SiteConfig:
    source: Path | None = None
    params: dict[str, dict[str, float]] = field(default_factory=dict)
    valueset_dirs: tuple[Path, ...] = ()
    conceptmaps: tuple[Path, ...] = ()


def _by_rule(modules: Sequence[ModuleType], table: str) -> dict[str, dict[str, Any]]:
    """One table of each module (``PARAMS``, ``PARAM_RANGES``) by rule id, as ``Engine`` names
    them (a building block without ``META`` by its module name)."""
    out: dict[str, dict[str, Any]] = {}
    for module in modules:
        meta = getattr(module, "META", None)
        rule_id = meta.id if meta else module.__name__.rsplit(".", 1)[-1]
        out[rule_id] = dict(getattr(module, table, {}))
    return out


def defaults(modules: Sequence[ModuleType] = MODULES) -> dict[str, dict[str, float]]:
    """Every overridable parameter, by rule id, with its default."""
    return _by_rule(modules, "PARAMS")


def ranges(modules: Sequence[ModuleType] = MODULES) -> dict[str, dict[str, ParamRange]]:
    """Every parameter's unit and plausible range, by rule id (as ``defaults`` names them)."""
    return _by_rule(modules, "PARAM_RANGES")


def orders(modules: Sequence[ModuleType] = MODULES) -> dict[str, tuple[ParamOrder, ...]]:
    """Every rule's ordered parameter pairs (``PARAM_ORDER``), by rule id."""
    out: dict[str, tuple[ParamOrder, ...]] = {}
    for module in modules:
        meta = getattr(module, "META", None)
        rule_id = meta.id if meta else module.__name__.rsplit(".", 1)[-1]
        out[rule_id] = tuple(getattr(module, "PARAM_ORDER", ()))
    return out


def overrides(site: SiteConfig, modules: Sequence[ModuleType] = MODULES) -> list[dict[str, object]]:
    """The site values that differ from the default (in range: ``load`` refused the others)."""
    known, limits = defaults(modules), ranges(modules)
    return [
        {"rule": rule_id, "param": name, "value": value, "default": known[rule_id][name],
         "unit": limits[rule_id][name].unit}
        for rule_id, values in site.params.items()
        for name, value in values.items()
        if value != known[rule_id][name]
    ]  # fmt: skip


def log_overrides(site: SiteConfig) -> None:
    """One structlog event at start naming every non-default clinical setting (no patient data)."""
    changed = overrides(site)
    if changed:
        get_logger("redflags.config").info("site_parameters", config=str(site.source), non_default=changed)


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
    import tomllib  # only with a configuration file: not on every replay's start-up

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    _only(path, "section", "", doc, SECTIONS)
    terminology = _table(path, "terminology", doc.get("terminology", {}))
    _only(path, "key", " in [terminology]", terminology, TERMINOLOGY_KEYS)
    params = _params(path, _table(path, "params", doc.get("params", {})), defaults(modules), ranges(modules))
    _check_order(path, params, defaults(modules), orders(modules))
    return SiteConfig(
        source=path,
        params=params,
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
    path: Path,
    table: Mapping[str, object],
    known: Mapping[str, Mapping[str, float]],
    limits: Mapping[str, Mapping[str, ParamRange]],
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for rule_id, values in table.items():
        if rule_id not in known:
            raise _fail(path, f"unknown rule id {rule_id!r} in [params] (known: {', '.join(known)})")
        section = f"params.{rule_id}"
        values = _table(path, section, values)
        _only(path, "parameter", f" in [{section}]", values, frozenset(known[rule_id]))
        for name, value in values.items():
            limit = limits[rule_id][name]
            if limit.unit == SWITCH:
                out.setdefault(rule_id, {})[name] = _switch(path, section, name, value)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise _fail(path, f"[{section}] {name} must be a finite number, got {value!r}")
            if not limit.low <= value <= limit.high:
                raise ParamOutOfRange(
                    f"{path}: [{section}] {name} = {value!r} is outside its plausible range "
                    f"{limit.text()} (default {known[rule_id][name]:g}; {limit.source})"
                )
            out.setdefault(rule_id, {})[name] = value
    return out


def _switch(path: Path, section: str, name: str, value: object) -> int:
    """An on/off parameter: ``true``/``false`` or 1/0 (the defaults' convention), as 1 or 0."""
    if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
        return int(value)
    raise ParamOutOfRange(
        f"{path}: [{section}] {name} is an on/off switch: true or false (or 1/0), got {value!r}"
    )


def _check_order(
    path: Path,
    params: Mapping[str, Mapping[str, float]],
    known: Mapping[str, Mapping[str, float]],
    pairs: Mapping[str, Sequence[ParamOrder]],
) -> None:
    """Each declared pair, on the values in force (site over default), must keep lower < upper."""
    for rule_id, values in params.items():
        merged = {**known[rule_id], **values}
        for pair in pairs.get(rule_id, ()):
            low, high = merged[pair.lower], merged[pair.upper]
            if not low < high:
                raise ParamOutOfRange(
                    f"{path}: [params.{rule_id}] {pair.lower} = {low:g} must be below "
                    f"{pair.upper} = {high:g} ({pair.reason})"
                )


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
