"""Find a patient's identifying values in log text: exact values, whole words only.

A substring check such as ``"1981" not in stderr`` flakes (random hex tokens and microsecond
timestamps contain any four digits) and misses the real birth date. Here each value taken
from the Patient resource (id, identifiers, names, birth date with its dashes) must not
appear as a word: not touching a letter or digit on either side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def identifying_values(bundle: dict) -> set[str]:
    """The Patient's id, identifier values, name parts and birth date, as written in the input."""
    found: set[str] = set()
    for entry in bundle.get("entry", []):
        patient = entry.get("resource", {})
        if patient.get("resourceType") != "Patient":
            continue
        found.update(str(v) for v in (patient.get("id"), patient.get("birthDate")) if v)
        found.update(i["value"] for i in patient.get("identifier", []) if i.get("value"))
        for name in patient.get("name", []):
            found.update(p for p in (name.get("family"), *name.get("given", [])) if p)
    return found


def leaked(text: str, values: Iterable[str]) -> list[str]:
    """The values that occur in ``text`` as whole words (case-insensitive), sorted."""
    return sorted(
        v for v in values if re.search(rf"(?<![A-Za-z0-9]){re.escape(v)}(?![A-Za-z0-9])", text, re.I)
    )
