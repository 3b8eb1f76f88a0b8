"""``redflags rules --explain ID``: a rule in plain words, generated from what the engine runs.

Everything printed comes from the compiled specs, the rule's metadata, its parameters and the
loaded value sets, so the explanation cannot drift from the behaviour.
"""

from __future__ import annotations

import re

from engine.dsl import UNLESS, Spec
from engine.session import Engine
from fhir_adapters.identifiers import ATC
from fhir_adapters.output import ACTION_RESOURCE
from fhir_adapters.terminology import Terminology
from rulesets.meta import ICD10CM

_VERBS = {
    "derive": "derives [{key}] when",
    "fire": "fires tier {tier} when",
    "block": "blocks tier {tier} when",
    "note": 'adds the card note "{text}" at tier {tier} when',
    "score": "sums [{key}] from its items, each counted once, missing items 0",
    "censor": "ignores {key} results taken after {after} began (the latest result before it counts)",
}


def _line(spec: Spec) -> str:
    verb = _VERBS[spec.does].format(key=spec.key, tier="/".join(spec.tiers), text=spec.text, after=spec.after)
    if spec.does == "score":
        return f"  - {verb}"
    if spec.does == "censor":
        return f"  - {verb}" + (f": {spec.text}" if spec.text else "")
    conds = " AND ".join(c.phrase for c in spec.conds)
    reason = f" ({spec.reason})" if spec.reason else ""
    points = f" ({spec.text})" if spec.label else ""
    disorder = f" [suggests {spec.disorder.display}]" if spec.disorder else ""
    return f"  - {verb}: {conds}{reason}{points}{disorder}"


def _derived_used(specs: list[Spec]) -> set[str]:
    return {c.key for s in specs for c in s.conds if c.kind == "derived" and c.key}


def _params(engine: Engine, rule_id: str, prefix: str = "") -> list[str]:
    """``name = value``, with the default beside a value the site's configuration changed."""
    default = engine.defaults.get(rule_id, {})
    return [
        f"  - {prefix}{name} = {value:g}"
        + (f" (site; default {default[name]:g})" if name in default and default[name] != value else "")
        for name, value in engine.params.get(rule_id, {}).items()
    ]


def explain(rule_id: str, engine: Engine, term: Terminology) -> str:
    meta = engine.metas[rule_id]
    everything = [*engine.specs, *engine.scores, *engine.censor_specs]
    own = [s for s in everything if s.rule == rule_id]
    # the counts behind unless() are how the engine decides it; the rule's own line says "no ..."
    shown = [s for s in own if s.label != UNLESS]
    # Building blocks from shared modules that this rule reads, followed transitively.
    wanted, shared, seen = _derived_used(own), [], set()
    while wanted - seen:
        key = sorted(wanted - seen)[0]
        seen.add(key)
        found = [
            s for s in everything if s.does in ("derive", "score") and s.key == key and s.rule != rule_id
        ]
        shared.extend(found)
        wanted |= _derived_used(found) | {f"{s.key}_item" for s in found if s.does == "score"}
    out = [
        f"{meta.id} {meta.version}: {meta.title}",
        f"Source: {meta.source_label} <{meta.source_url}>",
        f"Disorder (ConceptMap target): {meta.disorder.system}|{meta.disorder.code} {meta.disorder.display}",
        "Tiers (most urgent first):",
        *(f"  - {t.name}: {t.severity} - {t.label}" for t in meta.tiers),
        f"Parameters (a site overrides them as [params.{rule_id}] in its --config file):",
        *_params(engine, rule_id),
        "Criteria:",
        *(_line(s) for s in shown),
    ]
    if meta.suppressed_by:
        out.append("Competing rules:")
        out += [
            f"  - tier {ours} is not raised while {other} fires at tier {tier}"
            for other, tier, ours in meta.suppressed_by
        ]
    if shared:
        out.append("Shared building blocks it uses:")
        out += [_line(s) for s in shared]
        modules = sorted({s.rule for s in shared})
        sections = ", ".join(f"[params.{m}]" for m in modules)
        out.append(f"Their parameters (a site overrides them as {sections}):")
        for module in modules:
            out += _params(engine, module, f"{module}.")
    keys = sorted(
        {c.key for s in own + shared for c in s.conds if c.kind != "derived" and c.key}
        | {k for s in own if s.does == "censor" for k in (s.key, s.after)}
    )
    out.append("Value sets (built-in codes and a site's own):")
    site_codes: dict[str, set[tuple[str, str]]] = {}  # from site ValueSets and ConceptMaps
    for coding, matches in term.codes.items():
        for match in matches:
            site_codes.setdefault(match.key, set()).add(coding)
    for key in keys:
        info = term.keys.get(key)
        if info is None:
            out.append(f"  - {key}: NO VALUE SET")
            continue
        members = term.sets.get(info.url, set()) | site_codes.get(key, set())
        codes = sorted(f"{sys.rsplit('/', 1)[-1]} {code}" for sys, code in members)
        codes += [filter_words(*flt) for flt in term.filters.get(key, ())]
        unit = f", in {info.unit}" if info.unit else ""
        out.append(f"  - {key} ({info.title}{unit}) <{info.url}>: {', '.join(codes)}")
    out.append("CarePlan actions:")
    for action in meta.actions:
        codes = (
            ", ".join(f"{c.system.rsplit('/', 1)[-1]} {c.code} {c.display}" for c in action.codes)
            or "no code"
        )
        tiers = f" [tier {'/'.join(action.tiers)} only]" if action.tiers else ""
        resource = ACTION_RESOURCE[action.kind]
        out.append(f"  - {action.text} (due within {action.due_hours:g} h; {resource}; {codes}){tiers}")
    return "\n".join(out)


#: One piece of a simple code pattern: an escaped or plain literal character, or a class [a-b].
_PIECE = re.compile(r"\\(.)|\[(.)-(.)\]|([A-Za-z0-9])")
_SUBCODES = r"(\..*)?"
#: How a code system is named in a filter's words (else the last part of its URL).
_SYSTEM_NAMES = {ATC: "ATC", ICD10CM: "ICD-10-CM"}


def filter_words(system: str, op: str, value: str) -> str:
    """A ValueSet filter in plain words: ``is-a J01MA`` on ATC is "ATC codes starting with J01MA";
    a simple ICD regex (literals, digit classes, one alternation, optional ``.x`` subcodes) a code
    range; any other regex is quoted as written."""
    name = _SYSTEM_NAMES.get(system, system.rsplit("/", 1)[-1])
    if op == "is-a":
        return f"{name} codes starting with {value}"
    body = value.removeprefix("^").removesuffix("$")
    subcodes = body.endswith(_SUBCODES)
    body = body.removesuffix(_SUBCODES) if subcodes else body
    ranges = _ranges(body)
    if ranges is None:
        return f"{name} codes matching the regular expression {value}"
    spans = ", ".join(low if low == high else f"{low} to {high}" for low, high in ranges)
    return f"{name} codes {spans}" + (" and the codes under them" if subcodes else "")


def _ranges(body: str) -> list[tuple[str, str]] | None:
    """``R29\\.7[0-4][0-9]`` -> [("R29.700", "R29.749")]; ``C([0-8][0-9]|9[0-6])`` -> two ranges.
    None when the pattern is more than that or is not one contiguous range per alternative."""
    head, _, rest = body.partition("(")
    if not rest:
        return [span] if (span := _span(head)) else None
    inner, close, tail = rest.partition(")")
    if not close or "(" in inner or "(" in tail:
        return None
    spans = [_span(head + alt + tail) for alt in inner.split("|")]
    return None if any(s is None for s in spans) else spans  # type: ignore[return-value]


def _span(text: str) -> tuple[str, str] | None:
    """A sequence of literals and classes as (lowest, highest) code, if every class after the
    first varying one is full (0-9 or A-Z), so that every code in between matches."""
    low, high, varying, pos = [], [], False, 0
    while pos < len(text):
        piece = _PIECE.match(text, pos)
        if piece is None:
            return None
        escaped, first, last, plain = piece.groups()
        literal = escaped or plain
        if literal is not None:
            low.append(literal)
            high.append(literal)
        else:
            if varying and (first, last) not in (("0", "9"), ("A", "Z")):
                return None
            varying = varying or first != last
            low.append(first)
            high.append(last)
        pos = piece.end()
    return "".join(low), "".join(high)
