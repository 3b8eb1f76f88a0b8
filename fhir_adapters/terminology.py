"""Value sets as data: FHIR ValueSet files -> a code index used to turn codings into finding keys.

The built-in files live with the rules (clinical knowledge, versioned with them); the composing
layer passes their folder in (``rulesets.VALUESET_DIR``), so this adapter knows no rules. A site
adds its own codes without touching code, in either of two ways:

- ValueSet files in a folder of its own (``extra_dirs``) carrying the same ``finding-key``
  extension: their codes are merged into the key's set;
- FHIR R4 ConceptMaps (files given directly, or found in those folders) from its code system to
  the redflags finding system (target code = finding key) or to any code the value sets hold: a
  mapped local code then means whatever its target means (keys, sides, body-site sets).

Only mappings that make the local code imply its target count (``COUNTED_EQUIVALENCE``).

ICD-10 codes are compared in their dotted form (``normal_code``): exports often drop the dot
(``I639`` for ``I63.9``), and both spellings must mean the same finding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_adapters.identifiers import ATC, CANONICAL_BASE, FINDING_SYSTEM
from fhir_adapters.validate import FhirValidationError, validate

_SD = f"{CANONICAL_BASE}/StructureDefinition/"
EXT_KEY = _SD + "finding-key"
EXT_KIND = _SD + "finding-kind"
EXT_UNIT = _SD + "canonical-unit"
EXT_RESOURCES = _SD + "resource-types"
EXT_LATERALITY = _SD + "laterality"
EXT_REQUIRES_SITE = _SD + "requires-body-site"
EXT_REQUIRES_NO_SITE = _SD + "requires-no-body-site"
EXT_RESTRICTION = _SD + "match-restriction"
EXT_REQUIRES_ROUTE = _SD + "requires-route"

#: R4 ConceptMap equivalences under which a record coded with the source code establishes the
#: target: the same meaning (``equal``, ``equivalent``) or a narrower one (``wider``,
#: ``subsumes``: the target is wider / the source is-a target). ``narrower`` and
#: ``specializes`` say the source is broader than the target (a local "weakness" mapped to
#: leg weakness would raise alerts on any weakness), ``relatedto`` and ``inexact`` are loose,
#: ``unmatched`` and ``disjoint`` say "not this": none of them may turn a code into a finding.
COUNTED_EQUIVALENCE = frozenset({"equal", "equivalent", "wider", "subsumes"})

#: Code systems whose codes carry a dot after the category (3 characters) that senders often
#: leave out: ICD-10-CM and WHO ICD-10. Codes of these systems are indexed and looked up dotted.
DOTTED_AFTER_CATEGORY = frozenset({"http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"})
#: An ICD-10 code written without its dot: a category (letter, digit, digit or letter) and 1-4
#: more characters. Anything else (a dotted code, a 3-character category, lower case, garbage)
#: is looked up as sent: codes stay case-sensitive, as the value sets write them.
_UNDOTTED = re.compile(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{1,4}")

#: Code systems whose hierarchy is spelled in the code: a descendant's code starts with its
#: ancestor's (ATC: J01MA12 levofloxacin is-a J01MA fluoroquinolones). A ValueSet filter
#: ``concept is-a X`` on such a system matches every code starting with X (X itself too);
#: other systems' hierarchies (SNOMED) need a terminology server and are refused.
PREFIX_HIERARCHY = frozenset({ATC})


def normal_code(system: str, code: str) -> str:
    """The form a code is indexed and looked up in: an undotted ICD-10 code dotted, others as sent."""
    if system in DOTTED_AFTER_CATEGORY and _UNDOTTED.fullmatch(code):
        return f"{code[:3]}.{code[3:]}"
    return code


class TerminologyError(ValueError):
    """A value set or concept map file that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class Match:
    """One way a coding can mean a finding key."""

    key: str
    side: str | None = None  # pre-coordinated laterality
    requires_site: str | None = None  # ValueSet url the bodySite must be in
    requires_no_site: bool = False
    restriction: str | None = None  # "value-must-confirm" | "proxy-only"
    requires_route: str | None = None  # ValueSet url a medication's route must be in (IV magnesium)


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
    #: ``patterns`` by system (what ``matches`` tries: a LOINC code is not held against ICD-10's)
    system_patterns: dict[str, list[tuple[re.Pattern[str], Match]]] = field(default_factory=dict)
    sets: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # url -> codes
    set_sides: dict[tuple[str, str], str] = field(default_factory=dict)  # laterality codes
    kinds: dict[str, str] = field(default_factory=dict)  # url -> finding-kind
    sources: list[str] = field(default_factory=list)
    #: key -> (system, op, value) of each ValueSet filter, as written: what ``rules --explain``
    #: shows (the compiled ``patterns`` cannot be read back in plain words).
    filters: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def matches(self, system: str, code: str) -> list[Match]:
        code = normal_code(system, code)
        found = list(self.codes.get((system, code), ()))
        for pattern, match in self.system_patterns.get(system, ()):
            if pattern.fullmatch(code):  # the whole code, no trailing newline
                found.append(match)
        return found

    def in_set(self, url: str, system: str, code: str) -> bool:
        return (system, normal_code(system, code)) in self.sets.get(url, ())

    def set_url(self, name: str) -> str:
        return f"{CANONICAL_BASE}/ValueSet/{name}"

    def title(self, key: str) -> str:
        info = self.keys.get(key)
        return info.title if info else key.replace("_", " ")


def _ext(element: dict[str, Any], url: str) -> Any:  # the extension's value[x]: JSON as written
    for ext in element.get("extension", ()):
        if ext.get("url") == url:
            for name, value in ext.items():
                if name.startswith("value"):
                    return value
    return None


def _load_one(term: Terminology, vs: dict[str, Any], source: str) -> None:
    url = vs.get("url")
    if vs.get("resourceType") != "ValueSet" or not isinstance(url, str):
        raise TerminologyError(f"{source}: not a ValueSet with a url")
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
            unit=_ext(vs, EXT_UNIT),
            resource_types=frozenset(str(types).split()) if types else frozenset(),
            url=url,
        )
    for include in vs.get("compose", {}).get("include", ()):
        system = include.get("system")
        if not isinstance(system, str):
            raise TerminologyError(f"{source}: include without a system")
        for concept in include.get("concept", ()):
            code = normal_code(system, concept["code"])  # a site may write I639 for I63.9
            members.add((system, code))
            side = _ext(concept, EXT_LATERALITY)
            if kind == "laterality" and isinstance(side, str):
                term.set_sides[(system, code)] = side
            if isinstance(key, str):
                term.codes.setdefault((system, code), []).append(
                    Match(
                        key=key,
                        side=side if isinstance(side, str) else None,
                        requires_site=_ext(concept, EXT_REQUIRES_SITE),
                        requires_no_site=bool(_ext(concept, EXT_REQUIRES_NO_SITE)),
                        restriction=_ext(concept, EXT_RESTRICTION),
                        requires_route=_ext(concept, EXT_REQUIRES_ROUTE),
                    )
                )
        for flt in include.get("filter", ()):
            pattern = _filter_pattern(system, flt, source)
            if isinstance(key, str):
                match = Match(key=key)
                term.patterns.append((system, pattern, match))
                term.system_patterns.setdefault(system, []).append((pattern, match))
                term.filters.setdefault(key, []).append((system, str(flt.get("op")), flt["value"]))
    term.sources.append(source)


def _filter_pattern(system: str, flt: dict[str, Any], source: str) -> re.Pattern[str]:
    """A filter as a pattern on the whole code: ``code regex R``, or ``concept is-a X`` by prefix."""
    op, value = flt.get("op"), flt.get("value")
    if not isinstance(value, str):
        raise TerminologyError(f"{source}: a filter needs a value")
    if flt.get("property") == "code" and op == "regex":
        return re.compile(value)
    if flt.get("property") == "concept" and op == "is-a" and system in PREFIX_HIERARCHY:
        return re.compile(re.escape(value) + ".*")
    prefixed = ", ".join(sorted(PREFIX_HIERARCHY))
    raise TerminologyError(f"{source}: only code regex filters and concept is-a on {prefixed} are supported")


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise TerminologyError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise TerminologyError(f"{path}: not a FHIR resource")
    return doc


def _valid(doc: dict[str, Any], source: str) -> None:
    """R4 structure and required codes, so a site's mistake is one line naming its file."""
    try:
        validate(doc, doc["resourceType"])
    except FhirValidationError as exc:
        raise TerminologyError(f"{source}: {exc}") from None


def _map_one(term: Terminology, cm: dict[str, Any], source: str) -> None:
    """Let each source code mapped with a counted equivalence mean what its target means."""
    _valid(cm, source)
    for g, group in enumerate(cm.get("group", ())):
        system, target_system = group.get("source"), group.get("target")
        if not isinstance(system, str) or not isinstance(target_system, str):
            raise TerminologyError(f"{source}: ConceptMap.group[{g}] needs a source and a target system")
        for element in group.get("element", ()):
            code = element.get("code")
            for target in element.get("target", ()):
                equivalence = target.get("equivalence")
                if equivalence is None:  # R5's "relationship" is not R4: refuse, never guess
                    raise TerminologyError(f"{source}: {code}: a ConceptMap target needs an equivalence")
                if equivalence not in COUNTED_EQUIVALENCE:
                    continue
                target_code = target.get("code")
                if not isinstance(code, str) or not isinstance(target_code, str):
                    raise TerminologyError(f"{source}: a counted mapping without source or target code")
                local = (system, normal_code(system, code))
                found = _alias(term, local, (target_system, normal_code(target_system, target_code)))
                if not found and target_system == FINDING_SYSTEM:  # a typo would silently map nothing
                    raise TerminologyError(f"{source}: {code} maps to unknown finding {target_code!r}")
    term.sources.append(source)


def _alias(term: Terminology, local: tuple[str, str], target: tuple[str, str]) -> bool:
    """``local`` gets the target's key matches and set memberships; False if it has neither."""
    matches = term.matches(*target)
    known = term.codes.setdefault(local, [])
    known.extend(m for m in matches if m not in known)
    member = False
    for members in term.sets.values():
        if target in members:
            members.add(local)
            member = True
    if target in term.set_sides:
        term.set_sides[local] = term.set_sides[target]
    if not known:
        del term.codes[local]
    return bool(matches) or member


def load(builtin_dir: Path, extra_dirs: Sequence[Path] = (), conceptmaps: Sequence[Path] = ()) -> Terminology:
    """Built-in value sets (``builtin_dir``), then each site folder's, then every ConceptMap.

    ConceptMaps (the folders' and the listed ones) come last so that they can point at any code
    a value set holds, site ones too.
    """
    term = Terminology()
    maps: list[tuple[dict[str, Any], str]] = []
    for folder in (builtin_dir, *extra_dirs):
        for path in sorted(Path(folder).glob("*.json")):
            doc = _read(path)
            if doc.get("resourceType") == "ValueSet":
                if folder is not builtin_dir:  # a site's file is checked; ours are by the tests
                    _valid(doc, str(path))
                _load_one(term, doc, str(path))
            elif doc.get("resourceType") == "ConceptMap":
                maps.append((doc, str(path)))
    for path in conceptmaps:
        doc = _read(Path(path))
        if doc.get("resourceType") != "ConceptMap":
            raise TerminologyError(f"{path}: not a ConceptMap")
        maps.append((doc, str(path)))
    for doc, source in maps:
        _map_one(term, doc, source)
    return term
