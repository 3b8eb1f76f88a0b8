"""Value sets as data: FHIR ValueSet files -> a code index used to turn codings into finding keys.

The files live in ``rulesets/valuesets`` (clinical knowledge, versioned with the rules); a site
adds local codes by pointing ``extra_dirs`` at a folder of its own ValueSet files that use the
same ``finding-key`` extension: their codes are merged into the key's set, no code change needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from rulesets.meta import CANONICAL_BASE

_SD = f"{CANONICAL_BASE}/StructureDefinition/"
EXT_KEY = _SD + "finding-key"
EXT_KIND = _SD + "finding-kind"
EXT_UNIT = _SD + "canonical-unit"
EXT_RESOURCES = _SD + "resource-types"
EXT_LATERALITY = _SD + "laterality"
EXT_REQUIRES_SITE = _SD + "requires-body-site"
EXT_REQUIRES_NO_SITE = _SD + "requires-no-body-site"
EXT_RESTRICTION = _SD + "match-restriction"

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "rulesets" / "valuesets"


@dataclass(frozen=True, slots=True)
class Match:
    """One way a coding can mean a finding key."""

    key: str
    side: str | None = None  # pre-coordinated laterality
    requires_site: str | None = None  # ValueSet url the bodySite must be in
    requires_no_site: bool = False
    restriction: str | None = None  # "value-must-confirm" | "proxy-only"


@dataclass(slots=True)
class KeyInfo:
    key: str
    title: str
    kind: str
    unit: str | None
    resource_types: frozenset[str]
    url: str


@dataclass(slots=True)
class Terminology:
    """The loaded value sets; lookups are dictionary hits on (system, code)."""

    keys: dict[str, KeyInfo] = field(default_factory=dict)
    codes: dict[tuple[str, str], list[Match]] = field(default_factory=dict)
    patterns: list[tuple[str, re.Pattern[str], Match]] = field(default_factory=list)
    sets: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # url -> codes
    set_sides: dict[tuple[str, str], str] = field(default_factory=dict)  # laterality codes
    kinds: dict[str, str] = field(default_factory=dict)  # url -> finding-kind
    sources: list[str] = field(default_factory=list)

    def matches(self, system: str, code: str) -> list[Match]:
        found = list(self.codes.get((system, code), ()))
        for pattern_system, pattern, match in self.patterns:
            if pattern_system == system and pattern.match(code):
                found.append(match)
        return found

    def in_set(self, url: str, system: str, code: str) -> bool:
        return (system, code) in self.sets.get(url, ())

    def set_url(self, name: str) -> str:
        return f"{CANONICAL_BASE}/ValueSet/{name}"

    def title(self, key: str) -> str:
        info = self.keys.get(key)
        return info.title if info else key.replace("_", " ")


def _ext(element: dict, url: str) -> object:
    for ext in element.get("extension", ()):
        if ext.get("url") == url:
            for name, value in ext.items():
                if name.startswith("value"):
                    return value
    return None


def _load_one(term: Terminology, vs: dict, source: str) -> None:
    url = vs.get("url")
    if vs.get("resourceType") != "ValueSet" or not isinstance(url, str):
        raise ValueError(f"{source}: not a ValueSet with a url")
    key = _ext(vs, EXT_KEY)
    kind = _ext(vs, EXT_KIND) or "finding"
    term.kinds[url] = str(kind)
    members = term.sets.setdefault(url, set())
    if isinstance(key, str) and key not in term.keys:
        types = _ext(vs, EXT_RESOURCES)
        term.keys[key] = KeyInfo(
            key=key,
            title=str(vs.get("title") or key),
            kind=str(kind),
            unit=_ext(vs, EXT_UNIT),  # type: ignore[arg-type]
            resource_types=frozenset(str(types).split()) if types else frozenset(),
            url=url,
        )
    for include in vs.get("compose", {}).get("include", ()):
        system = include.get("system")
        if not isinstance(system, str):
            raise ValueError(f"{source}: include without a system")
        for concept in include.get("concept", ()):
            code = concept["code"]
            members.add((system, code))
            side = _ext(concept, EXT_LATERALITY)
            if kind == "laterality" and isinstance(side, str):
                term.set_sides[(system, code)] = side
            if isinstance(key, str):
                term.codes.setdefault((system, code), []).append(
                    Match(
                        key=key,
                        side=side if isinstance(side, str) else None,
                        requires_site=_ext(concept, EXT_REQUIRES_SITE),  # type: ignore[arg-type]
                        requires_no_site=bool(_ext(concept, EXT_REQUIRES_NO_SITE)),
                        restriction=_ext(concept, EXT_RESTRICTION),  # type: ignore[arg-type]
                    )
                )
        for flt in include.get("filter", ()):
            if flt.get("property") != "code" or flt.get("op") != "regex":
                raise ValueError(f"{source}: only code regex filters are supported")
            if isinstance(key, str):
                term.patterns.append((system, re.compile(flt["value"]), Match(key=key)))
    term.sources.append(source)


def load(extra_dirs: Sequence[Path] = ()) -> Terminology:
    """Load the built-in value sets, then each site folder (whose codes extend the same keys)."""
    term = Terminology()
    for folder in (BUILTIN_DIR, *extra_dirs):
        for path in sorted(Path(folder).glob("*.json")):
            doc = orjson.loads(path.read_bytes())
            if doc.get("resourceType") == "ValueSet":
                _load_one(term, doc, str(path))
    return term


def used_keys(term: Terminology) -> Iterable[str]:
    return term.keys.keys()
