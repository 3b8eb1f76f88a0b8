"""Deterministic synthetic FHIR R4 patients for benchmarks.

Each patient is a realistic EHR extract of about 20 resources (Patient, Practitioner,
Encounter, chronic Conditions no rule reads, vital signs, labs, MedicationRequests). In every
block of 100 patients (shuffled, seeded): 10 are positive (5 fire ``cauda_equina_syndrome``
tier A, 5 ``guillain_barre_syndrome`` tier A, shaped like vignettes V01 and V03), 10 are
near misses (5 unilateral sciatica with saddle numbness explicitly absent and a normal
bladder scan, as V02; 5 chronic diabetic polyneuropathy with absent ankle reflexes and full
power, as V04) and 80 carry only findings no rule fires on. Patients are written as
collection Bundles, ``per_file`` patients per file, compact orjson.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
FINDING = "https://redflags.dev/fhir/CodeSystem/leg-weakness-finding"
MUSCLE = "https://redflags.dev/fhir/CodeSystem/muscle-group"
LATERALITY = "https://redflags.dev/fhir/StructureDefinition/laterality"
EHR = "https://ehr.example.org/fhir"
HOUR = 3600
DAY = 86400
YEAR = 365 * DAY

CES = "cauda_equina_syndrome"
GBS = "guillain_barre_syndrome"
#: Archetypes per block of 100 patients: (name, count, rule expected to fire or None).
BLOCK: tuple[tuple[str, int, str | None], ...] = (
    ("ces_positive", 5, CES),
    ("gbs_positive", 5, GBS),
    ("ces_near_miss", 5, None),
    ("gbs_near_miss", 5, None),
    ("background", 80, None),
)
EXPECTED_RULE = {name: rule for name, _count, rule in BLOCK}


def _cc(system: str, code: str, display: str, text: str | None = None) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def _lateral(site: dict, side_code: str, side: str) -> dict:
    return {"extension": [{"url": LATERALITY, "valueCodeableConcept": _cc(SNOMED, side_code, side)}], **site}


# Shared, never mutated: orjson serialises a shared dict like any other.
_OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
CAT_VITAL = [_cc(_OBS_CAT, "vital-signs", "Vital Signs")]
CAT_LAB = [_cc(_OBS_CAT, "laboratory", "Laboratory")]
CAT_EXAM = [_cc(_OBS_CAT, "exam", "Exam")]
CAT_PROC = [_cc(_OBS_CAT, "procedure", "Procedure")]
CLIN_ACTIVE = _cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")
CLIN_RESOLVED = _cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved", "Resolved")
VER_CONFIRMED = _cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed")
_COND_CAT = "http://terminology.hl7.org/CodeSystem/condition-category"
CAT_ENC_DX = [_cc(_COND_CAT, "encounter-diagnosis", "Encounter Diagnosis")]
CAT_PROBLEM = [_cc(_COND_CAT, "problem-list-item", "Problem List Item")]
ABSENT = _cc(SNOMED, "2667000", "Absent")
LIMB = {"coding": [{"system": SNOMED, "code": "61685007", "display": "Lower limb structure"}]}
BOTH_LEGS = _lateral({**LIMB, "text": "Lower limb structure, both sides"}, "51440002", "Right and left")
PERINEUM = _cc(SNOMED, "38864007", "Perineal structure", "Perineum")
BLADDER = _cc(SNOMED, "89837001", "Urinary bladder structure", "Bladder")
ENC_CLASS = {
    "AMB": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "AMB",
        "display": "ambulatory",
    },
    "EMER": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "EMER",
        "display": "emergency",
    },
    "IMP": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "IMP",
        "display": "inpatient encounter",
    },
}

#: Chronic problems no rule reads (SNOMED), each with a plausible onset range in years ago.
CHRONIC = (
    (_cc(SNOMED, "38341003", "Hypertensive disorder"), "Hypertension"),
    (_cc(SNOMED, "44054006", "Type 2 diabetes mellitus"), "Type 2 diabetes"),
    (_cc(SNOMED, "55822004", "Hyperlipidemia"), "Hyperlipidaemia"),
    (_cc(SNOMED, "195967001", "Asthma"), "Asthma"),
    (_cc(SNOMED, "40930008", "Hypothyroidism"), "Hypothyroidism"),
    (_cc(SNOMED, "235595009", "Gastroesophageal reflux disease"), "GORD"),
    (_cc(SNOMED, "35489007", "Depressive disorder"), "Depression"),
)
MEDS = (
    _cc(RXNORM, "17767", "Amlodipine"),
    _cc(RXNORM, "6809", "Metformin"),
    _cc(RXNORM, "36567", "Simvastatin"),
    _cc(RXNORM, "10582", "Levothyroxine"),
    _cc(RXNORM, "7646", "Omeprazole"),
    _cc(RXNORM, "161", "Acetaminophen"),
)
#: (suffix, category, code, UCUM unit, display unit, low, high, decimals, profile)
VITALS = (
    ("hr", _cc(LOINC, "8867-4", "Heart rate"), "/min", "beats/minute", 55, 100, 0, "heartrate"),
    ("rr", _cc(LOINC, "9279-1", "Respiratory rate"), "/min", "breaths/minute", 12, 20, 0, "resprate"),
    ("temp", _cc(LOINC, "8310-5", "Body temperature"), "Cel", "C", 36.1, 37.4, 1, "bodytemp"),
    (
        "spo2",
        _cc(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        "%",
        "%",
        95,
        100,
        0,
        "oxygensat",
    ),
    ("height", _cc(LOINC, "8302-2", "Body height"), "cm", "cm", 150, 195, 0, "bodyheight"),
)
LABS = (
    ("k", _cc(LOINC, "2823-3", "Potassium [Moles/volume] in Serum or Plasma"), "mmol/L", 3.6, 5.0, 1),
    ("na", _cc(LOINC, "2951-2", "Sodium [Moles/volume] in Serum or Plasma"), "mmol/L", 136, 144, 0),
    ("creat", _cc(LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"), "umol/L", 55, 105, 0),
    ("gluc", _cc(LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma"), "mmol/L", 4.2, 7.5, 1),
    ("hb", _cc(LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood"), "g/L", 120, 165, 0),
    (
        "wbc",
        _cc(LOINC, "6690-2", "Leukocytes [#/volume] in Blood by Automated count"),
        "10*9/L",
        4.0,
        10.5,
        1,
    ),
)
WEIGHT = _cc(LOINC, "29463-7", "Body weight")
BP = _cc(LOINC, "85354-9", "Blood pressure panel with all children optional", "Blood pressure")
SYSTOLIC = _cc(LOINC, "8480-6", "Systolic blood pressure")
DIASTOLIC = _cc(LOINC, "8462-4", "Diastolic blood pressure")
FAMILY = ("Marsh", "Lindqvist", "Okafor", "Nguyen", "Haddad", "Kowalski", "Silva", "Brennan", "Ito", "Moreau")
GIVEN = {
    "female": ("Helen", "Aisha", "Mei", "Ingrid", "Lucia"),
    "male": ("Tomas", "Omar", "Ravi", "Jan", "Luis"),
}


def iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _qty(value: float, code: str, unit: str | None = None) -> dict:
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


class _Patient:
    """Builds one patient's resources; every id is prefixed with the patient id."""

    __slots__ = ("enc", "entries", "now", "pid", "pr", "rng", "subject")

    def __init__(self, pid: str, rng: random.Random, now: int) -> None:
        self.pid, self.rng, self.now = pid, rng, now
        self.subject = {"reference": f"Patient/{pid}"}
        self.enc = {"reference": f"Encounter/enc-{pid}"}
        self.pr = {"reference": f"Practitioner/pr-{pid}"}
        self.entries: list[dict] = []

    def add(self, resource: dict) -> None:
        url = f"{EHR}/{resource['resourceType']}/{resource['id']}"
        self.entries.append({"fullUrl": url, "resource": resource})

    def base(self, enc_class: str, reason: str, start: int) -> None:
        rng, pid = self.rng, self.pid
        gender = rng.choice(("female", "male"))
        birth = self.now - rng.randint(18, 90) * YEAR - rng.randint(0, 364) * DAY
        self.add(
            {
                "resourceType": "Patient",
                "id": pid,
                "identifier": [{"system": f"{EHR}/sid/mrn", "value": f"MRN-{pid.upper()}"}],
                "active": True,
                "name": [
                    {"use": "official", "family": rng.choice(FAMILY), "given": [rng.choice(GIVEN[gender])]}
                ],
                "gender": gender,
                "birthDate": iso(birth)[:10],
            }
        )
        self.add(
            {
                "resourceType": "Practitioner",
                "id": f"pr-{pid}",
                "identifier": [{"system": f"{EHR}/sid/staff-id", "value": f"PR-{pid.upper()}"}],
                "active": True,
                "name": [
                    {"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN["female"])], "prefix": ["Dr"]}
                ],
            }
        )
        self.add(
            {
                "resourceType": "Encounter",
                "id": f"enc-{pid}",
                "status": "in-progress",
                "class": ENC_CLASS[enc_class],
                "subject": self.subject,
                "participant": [{"individual": self.pr}],
                "period": {"start": iso(start)},
                "reasonCode": [{"text": reason}],
            }
        )

    def condition(
        self,
        suffix: str,
        code: dict,
        onset: int,
        recorded: int,
        *,
        body: dict | None = None,
        resolved_at: int | None = None,
        category: list | None = None,
    ) -> None:
        res: dict = {
            "resourceType": "Condition",
            "id": f"{self.pid}-{suffix}",
            "clinicalStatus": CLIN_RESOLVED if resolved_at else CLIN_ACTIVE,
            "verificationStatus": VER_CONFIRMED,
            "category": category or CAT_ENC_DX,
            "code": code,
        }
        if body is not None:
            res["bodySite"] = [body]
        res["subject"] = self.subject
        res["encounter"] = self.enc
        res["onsetDateTime"] = iso(onset)
        if resolved_at:
            res["abatementDateTime"] = iso(resolved_at)
        res["recordedDate"] = iso(recorded)
        res["recorder"] = self.pr
        self.add(res)

    def observation(
        self,
        suffix: str,
        category: list,
        code: dict,
        when: int,
        *,
        value: tuple[str, object] | None = None,
        body: dict | None = None,
        profile: str | None = None,
    ) -> None:
        res: dict = {"resourceType": "Observation", "id": f"{self.pid}-{suffix}"}
        if profile:
            res["meta"] = {"profile": [f"http://hl7.org/fhir/StructureDefinition/{profile}"]}
        res["status"] = "final"
        res["category"] = category
        res["code"] = code
        res["subject"] = self.subject
        res["encounter"] = self.enc
        res["effectiveDateTime"] = iso(when)
        if category is not CAT_VITAL:
            res["performer"] = [self.pr]
        if value is not None:
            res[value[0]] = value[1]
        if body is not None:
            res["bodySite"] = body
        self.add(res)

    def chronic(self, count: int, exclude: frozenset[str] = frozenset()) -> None:
        rng = self.rng
        for code, slug in rng.sample([c for c in CHRONIC if c[1] not in exclude], count):
            onset = self.now - rng.randint(1, 25) * YEAR - rng.randint(0, 364) * DAY
            self.condition(slug.lower(), code, onset, onset + rng.randint(0, 60) * DAY, category=CAT_PROBLEM)

    def vitals(self, when: int, weight: float, count: int) -> None:
        rng = self.rng
        sbp, dbp = rng.randint(105, 150), rng.randint(62, 92)
        self.observation(
            "bp",
            CAT_VITAL,
            BP,
            when,
            profile="bp",
            value=(
                "component",
                [
                    {"code": SYSTOLIC, "valueQuantity": _qty(sbp, "mm[Hg]", "mmHg")},
                    {"code": DIASTOLIC, "valueQuantity": _qty(dbp, "mm[Hg]", "mmHg")},
                ],
            ),
        )
        self.observation(
            "weight",
            CAT_VITAL,
            WEIGHT,
            when,
            profile="bodyweight",
            value=("valueQuantity", _qty(weight, "kg")),
        )
        for suffix, code, ucum, unit, lo, hi, dec, profile in VITALS[:count]:
            v = round(rng.uniform(lo, hi), dec) if dec else rng.randint(lo, hi)
            self.observation(
                suffix, CAT_VITAL, code, when, profile=profile, value=("valueQuantity", _qty(v, ucum, unit))
            )

    def labs(self, when: int, count: int) -> None:
        rng = self.rng
        for suffix, code, ucum, lo, hi, dec in rng.sample(LABS, count):
            v = round(rng.uniform(lo, hi), dec) if dec else rng.randint(lo, hi)
            self.observation(suffix, CAT_LAB, code, when, value=("valueQuantity", _qty(v, ucum)))

    def meds(self, when: int, count: int) -> None:
        for i, med in enumerate(self.rng.sample(MEDS, count)):
            self.add(
                {
                    "resourceType": "MedicationRequest",
                    "id": f"{self.pid}-med{i}",
                    "status": "active",
                    "intent": "order",
                    "medicationCodeableConcept": med,
                    "subject": self.subject,
                    "encounter": self.enc,
                    "authoredOn": iso(when),
                    "requester": self.pr,
                    "dosageInstruction": [{"text": "as directed"}],
                }
            )


def _minutes(rng: random.Random, lo_h: float, hi_h: float) -> int:
    """A random whole-minute offset between lo_h and hi_h hours."""
    return rng.randint(int(lo_h * 60), int(hi_h * 60)) * 60


def _background(p: _Patient) -> None:
    rng, now = p.rng, p.now
    start = now - _minutes(rng, 2, 72)
    p.base(rng.choice(("AMB", "AMB", "EMER", "IMP")), "Review", start)
    p.chronic(rng.randint(2, 4))
    p.vitals(start + 600, round(rng.uniform(50, 110), 1), rng.randint(3, 5))
    p.labs(start + 3600, rng.randint(4, 6))
    p.meds(start + 1800, rng.randint(1, 3))


def _ces_positive(p: _Patient) -> None:
    """V01: new saddle numbness, PVR > 200 mL within 24 h, back pain and bilateral sciatica."""
    rng, now = p.rng, p.now
    start = now - _minutes(rng, 3, 10)
    p.base("EMER", "Low back pain with numbness 'down below'", start)
    p.chronic(rng.randint(1, 2))
    p.condition(
        "low-back-pain",
        _cc(SNOMED, "279039007", "Low back pain"),
        now - rng.randint(2, 10) * DAY,
        start + 600,
    )
    p.observation(
        "saddle-numbness",
        CAT_EXAM,
        _cc(SNOMED, "449813001", "Numbness of saddle area", "Saddle anaesthesia"),
        start + 1200,
        body=PERINEUM,
    )
    p.observation("sciatica", CAT_EXAM, _cc(SNOMED, "23056005", "Sciatica"), start + 1200, body=BOTH_LEGS)
    p.observation(
        "pvr",
        CAT_PROC,
        _cc(FINDING, "pvr_volume", "Post-void residual urine volume", "Bladder scan: post-void residual"),
        now - _minutes(rng, 0.5, 2.5),
        value=("valueQuantity", _qty(rng.randint(250, 900), "mL")),
        body=BLADDER,
    )
    p.vitals(start + 300, round(rng.uniform(55, 110), 1), rng.randint(3, 5))
    p.labs(start + 3600, rng.randint(2, 4))
    p.meds(start + 900, rng.randint(1, 2))


def _gbs_positive(p: _Patient) -> None:
    """V03: bilateral leg weakness 3-20 days old, absent reflexes, FVC < 20 mL/kg."""
    rng, now = p.rng, p.now
    onset = now - rng.randint(3, 20) * DAY
    start = onset + DAY + _minutes(rng, 0, 12)
    p.base("IMP", "Progressive weakness of both legs", start)
    p.chronic(1)
    p.condition(
        "gastroenteritis",
        _cc(SNOMED, "25374005", "Gastroenteritis"),
        onset - 14 * DAY,
        start,
        resolved_at=onset - 9 * DAY,
    )
    p.condition(
        "leg-weakness",
        _cc(SNOMED, "26544005", "Muscle weakness", "Weakness of both legs"),
        onset,
        start + 1800,
        body=BOTH_LEGS,
    )
    mrc = _cc(FINDING, "mrc_grade", "MRC muscle power grade", "MRC grade")
    for i, group in enumerate(("hip_flexors", "knee_extensors")):
        site = _lateral(
            {"coding": [{"system": MUSCLE, "code": group, "display": group.replace("_", " ").capitalize()}]},
            "51440002",
            "Right and left",
        )
        p.observation(
            f"mrc-{i}",
            CAT_EXAM,
            mrc,
            now - _minutes(rng, 2, 20),
            value=("valueInteger", rng.randint(2, 4)),
            body=site,
        )
    p.observation(
        "reflexes-absent",
        CAT_EXAM,
        _cc(SNOMED, "37280007", "Absent reflex", "Knee and ankle reflexes absent"),
        now - _minutes(rng, 3, 24),
        body=BOTH_LEGS,
    )
    weight = round(rng.uniform(55, 110), 1)
    fvc = round(weight * rng.uniform(0.010, 0.018), 2)  # 10-18 mL/kg
    when = now - _minutes(rng, 1, 6)
    p.observation(
        "fvc",
        CAT_PROC,
        _cc(LOINC, "19870-5", "Forced vital capacity [Volume] Respiratory system by Spirometry", "FVC"),
        when,
        value=("valueQuantity", _qty(fvc, "L")),
    )
    p.vitals(when, weight, rng.randint(2, 4))
    p.labs(when - 3600, rng.randint(2, 4))
    p.meds(start + 900, 1)


def _ces_near_miss(p: _Patient) -> None:
    """V02: back pain with one-sided sciatica, saddle numbness explicitly absent, PVR < 200 mL."""
    rng, now = p.rng, p.now
    start = now - _minutes(rng, 3, 10)
    side = rng.choice((("M54.31", "Sciatica, right side"), ("M54.32", "Sciatica, left side")))
    p.base("EMER", "Back pain radiating to one leg", start)
    p.chronic(rng.randint(1, 3))
    p.condition(
        "back-pain", _cc(SNOMED, "279039007", "Low back pain"), now - rng.randint(2, 12) * DAY, start + 600
    )
    p.condition("sciatica", _cc(ICD10, *side), now - rng.randint(2, 12) * DAY, start + 600)
    p.observation(
        "saddle-absent",
        CAT_EXAM,
        _cc(SNOMED, "449813001", "Numbness of saddle area", "Saddle sensation: numbness absent (normal)"),
        start + 1200,
        value=("valueCodeableConcept", ABSENT),
        body=PERINEUM,
    )
    p.observation(
        "pvr",
        CAT_PROC,
        _cc(FINDING, "pvr_volume", "Post-void residual urine volume"),
        now - _minutes(rng, 0.5, 2.5),
        value=("valueQuantity", _qty(rng.randint(10, 150), "mL")),
        body=BLADDER,
    )
    p.vitals(start + 300, round(rng.uniform(55, 110), 1), rng.randint(3, 5))
    p.labs(start + 900, rng.randint(3, 5))
    p.meds(start + 900, rng.randint(1, 2))


def _gbs_near_miss(p: _Patient) -> None:
    """V04: chronic diabetic polyneuropathy, absent ankle reflexes, MRC 5 everywhere."""
    rng, now = p.rng, p.now
    start = now - _minutes(rng, 2, 48)
    years = rng.randint(2, 8)
    p.base("AMB", "Numb feet, review", start)
    p.condition(
        "t2dm", CHRONIC[1][0], now - (years + 8) * YEAR, now - (years + 8) * YEAR, category=CAT_PROBLEM
    )
    p.chronic(rng.randint(1, 2), exclude=frozenset({"Type 2 diabetes"}))
    p.condition(
        "polyneuropathy",
        _cc(SNOMED, "42345000", "Polyneuropathy"),
        now - years * YEAR,
        now - years * YEAR,
        category=CAT_PROBLEM,
    )
    p.condition(
        "leg-numbness",
        _cc(SNOMED, "309537005", "Numbness of lower limb"),
        now - years * YEAR,
        now - years * YEAR,
        body=BOTH_LEGS,
        category=CAT_PROBLEM,
    )
    p.observation(
        "ankle-reflexes-absent",
        CAT_EXAM,
        _cc(SNOMED, "37280007", "Absent reflex", "Ankle reflexes absent"),
        start + 900,
        body=BOTH_LEGS,
    )
    mrc = _cc(FINDING, "mrc_grade", "MRC muscle power grade", "MRC grade")
    for i, group in enumerate(("hip_flexors", "knee_extensors", "ankle_dorsiflexors")):
        site = _lateral({"coding": [{"system": MUSCLE, "code": group}]}, "51440002", "Right and left")
        p.observation(f"mrc-{i}", CAT_EXAM, mrc, start + 900, value=("valueInteger", 5), body=site)
    p.vitals(start + 300, round(rng.uniform(60, 120), 1), rng.randint(2, 4))
    p.labs(start + 600, rng.randint(2, 4))
    p.meds(start + 600, 1)


BUILDERS = {
    "ces_positive": _ces_positive,
    "gbs_positive": _gbs_positive,
    "ces_near_miss": _ces_near_miss,
    "gbs_near_miss": _gbs_near_miss,
    "background": _background,
}


@dataclass(slots=True)
class Corpus:
    """What was written, and what a correct replay must find."""

    paths: list[Path]
    total_bytes: int
    patients: int
    resources: int
    positives: int  # patients expected to raise at least one alert
    by_rule: dict[str, int] = field(default_factory=dict)  # rule -> patients expected to fire it
    archetypes: dict[str, int] = field(default_factory=dict)


def archetypes(n: int, rng: random.Random) -> list[str]:
    """Archetype of each of n patients: the BLOCK mix, shuffled within each block of 100."""
    block = [name for name, count, _rule in BLOCK for _ in range(count)]
    out: list[str] = []
    while len(out) < n:
        chunk = block[:]
        rng.shuffle(chunk)
        out.extend(chunk)
    return out[:n]


def patient_entries(index: int, kind: str, rng: random.Random, now: int) -> list[dict]:
    """The Bundle entries of patient number ``index`` of the given archetype."""
    p = _Patient(f"p{index:07d}", rng, now)
    BUILDERS[kind](p)
    return p.entries


def generate(folder: Path, n: int, now: int, *, per_file: int = 100, seed: int = 20250310) -> Corpus:
    """Write n patients as collection Bundles of ``per_file`` patients into ``folder``."""
    rng = random.Random(seed)
    kinds = archetypes(n, rng)
    paths: list[Path] = []
    total = resources = 0
    stamp = iso(now - 300)
    for first in range(0, n, per_file):
        entries: list[dict] = []
        for i in range(first, min(first + per_file, n)):
            entries.extend(patient_entries(i, kinds[i], rng, now))
        number = first // per_file
        bundle = {
            "resourceType": "Bundle",
            "id": f"bench-{number:05d}",
            "meta": {"lastUpdated": stamp},
            "type": "collection",
            "timestamp": stamp,
            "entry": entries,
        }
        data = orjson.dumps(bundle)
        path = folder / f"bundle-{number:05d}.json"
        path.write_bytes(data)
        paths.append(path)
        total += len(data)
        resources += len(entries)
    counts = Counter(kinds)
    by_rule: Counter[str] = Counter()
    for kind, count in counts.items():
        if EXPECTED_RULE[kind]:
            by_rule[EXPECTED_RULE[kind]] += count
    return Corpus(
        paths=paths,
        total_bytes=total,
        patients=n,
        resources=resources,
        positives=sum(by_rule.values()),
        by_rule=dict(by_rule),
        archetypes=dict(counts),
    )
