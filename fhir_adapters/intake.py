"""Read FHIR inputs (Bundles of any type, single resources, NDJSON) and group them per patient.

This is the only place that knows Bundle shapes; everything after it sees one patient's
resources with the element path each came from, so every later error can name that path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import orjson

from fhir_adapters.errors import InputError, shown

#: Resource types read only as the context of another resource (14.4: the period of the
#: Encounter an undated Condition references dates it). They make no facts and no patient of
#: their own: each joins the patients whose resources reference it.
CONTEXT_TYPES = frozenset({"Encounter", "Medication"})
#: Resource types the rules read (as facts, or as context); other types are skipped without error.
MAPPED_TYPES = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "Procedure",
        "MedicationRequest",
        "MedicationStatement",
        "MedicationAdministration",
        *CONTEXT_TYPES,
    }
)
#: Which element of a resource references its context (resource type -> element name).
CONTEXT_ELEMENT = {
    "Condition": "encounter",
    # the drug of a record by reference (fhir_adapters.medication_ref reads the Medication's code)
    "MedicationRequest": "medicationReference",
    "MedicationStatement": "medicationReference",
    "MedicationAdministration": "medicationReference",
}


#: FHIR id (R4 datatypes: id): what ``Type/<id>`` references and URLs built from ids may hold.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
FHIR_ID_TEXT = "1-64 of A-Z a-z 0-9 - ."
_is_id = FHIR_ID.fullmatch  # ``is_fhir_id`` where it runs per resource
#: A fullUrl that may stand for an id-less resource: a urn, or an absolute URL with no space or control.
_FULL_URL = re.compile(r"urn:(uuid|oid):[A-Za-z0-9.\-]{1,64}|https?://[!-~]{1,2000}")


#: Resources one call may carry (a request body, a CDS Hooks prefetch with what was fetched):
#: the work of an evaluation grows with them, so a larger call is refused whole.
DEFAULT_MAX_RESOURCES = 10_000


class TooManyResources(InputError):
    """More resources in one call than the limit: refused before anything is evaluated."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} resources in one call: the limit is {limit} resources per call")
        self.count, self.limit = count, limit

    def __reduce__(self) -> tuple[type[TooManyResources], tuple[int, int]]:
        return (TooManyResources, (self.count, self.limit))  # raised in an engine process


def check_resources(count: int, limit: int | None) -> None:
    """TooManyResources when ``count`` is over ``limit`` (None or 0: no limit)."""
    if limit and count > limit:
        raise TooManyResources(count, limit)


class Entry(NamedTuple):  # a tuple: one is made per resource of every input
    path: str  # e.g. "Bundle.entry[3].resource"
    resource: dict[str, Any]
    full_url: str | None = None  # the Bundle entry's fullUrl, the reference of an id-less resource
    text: bytes | None = None  # the resource's JSON as it arrived, when kept (a CDS call's record)


#: ``Entry`` from its four fields without the generated ``__new__`` (a Python call per resource)
_entry = tuple.__new__


#: (path, resource, fullUrl): a resource as read, what ``group`` reads into an ``Entry``
Found = tuple[str, dict[str, Any], str | None]
#: the same with the resource's JSON text (``Entry.text``)
WithText = tuple[str, dict[str, Any], str | None, bytes]


@dataclass(frozen=True, slots=True)
class Issue:
    """Something in the input that was skipped or could not be read (never silently lost)."""

    path: str
    message: str
    code: str = "invalid"  # OperationOutcome issue type
    severity: str = "error"


@dataclass(slots=True)
class PatientGroup:
    pid: str  # "Patient/<id>"
    entries: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class Intake:
    """One input, read: its patients in first-seen order and what could not be used."""

    source: str
    patients: dict[str, PatientGroup] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    #: Context resources (CONTEXT_TYPES) no patient of this input referenced, with the patient
    #: they name (or None): a later step may join them to resources read elsewhere (bulk replay).
    context: list[tuple[str | None, Entry]] = field(default_factory=list)


def _walk(
    resource: object, path: str, full_url: str | None
) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """Yield (path, resource, fullUrl) for a resource and, for a Bundle, each entry inside it."""
    if not isinstance(resource, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(resource).__name__}")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise InputError(f"{path}: not a FHIR resource (no resourceType)")
    if rtype != "Bundle":
        yield path, resource, full_url
        return
    entries = resource.get("entry", [])
    if not isinstance(entries, list):
        raise InputError(f"{path}.entry: expected an array")
    for i, entry in enumerate(entries):
        epath = f"{path}.entry[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{epath}: expected an object")
        inner = entry.get("resource")
        if inner is None:  # a DELETE/GET request or a transaction-response entry
            continue
        url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        yield from _walk(inner, f"{epath}.resource", url)


def resources_of(doc: object, path: str) -> list[tuple[str, dict[str, Any], str | None]]:
    """Every resource of one JSON document (a Bundle's entries, recursively) with its element path.

    For callers that assemble one input from several documents (the resources of a FHIR
    ``Parameters``), each under its own path; ``group`` then assigns them to patients.
    """
    return list(_walk(doc, path, None))


def reference_of(resource: dict[str, Any], full_url: str | None) -> str:
    """ "Type/id" when the resource has a FHIR id, else its fullUrl (a urn or an absolute URL
    without spaces), else a placeholder: what evidence references and cards name it by."""
    rid = resource.get("id")
    if isinstance(rid, str) and _is_id(rid) is not None:  # ``is_fhir_id``, once per resource
        return f"{resource['resourceType']}/{rid}"
    if full_url and _FULL_URL.fullmatch(full_url):
        return full_url
    return f"{resource['resourceType']}/(no id)"


def _segments(url: str) -> list[str]:
    """The path segments of a reference or fullUrl, without a trailing /_history/<version>."""
    return url.split("/_history/")[0].rstrip("/").split("/")


def resource_type(value: object) -> object:
    """``resourceType`` of a JSON object as sent (any JSON value), None when absent or not an object."""
    return value.get("resourceType") if isinstance(value, dict) else None


def names_a_type(value: dict[str, object]) -> bool:
    """Whether a JSON object has a ``resourceType`` member at all (a FHIR resource, not a manifest)."""
    return "resourceType" in value


def is_fhir_id(value: object) -> bool:
    """FHIR id syntax, the whole string (``fullmatch``: a trailing newline is not an id)."""
    return isinstance(value, str) and FHIR_ID.fullmatch(value) is not None


def _patient_id(res: dict[str, Any], full_url: str | None) -> str | None:
    """ "Patient/<id>" from the id, else from an absolute or urn:uuid fullUrl; None if no FHIR id."""
    rid = res.get("id")
    if isinstance(rid, str) and rid:
        return f"Patient/{rid}" if is_fhir_id(rid) else None
    if full_url:
        derived = _segments(full_url)[-1].rsplit(":", 1)[-1]
        return f"Patient/{derived}" if is_fhir_id(derived) else None
    return "Patient/(no id)"


def local_reference(target: str) -> str:
    """ "Type/id" for an absolute or versioned reference to a resource with a FHIR id, else as given
    (a urn:uuid stays a urn): the key a referenced context resource is found by."""
    parts = _segments(target)
    if len(parts) >= 2 and parts[-2][:1].isupper() and is_fhir_id(parts[-1]):
        return f"{parts[-2]}/{parts[-1]}"
    return target


def context_target(res: dict[str, Any]) -> str | None:
    """The reference a resource makes to its context resource (a Condition's Encounter), if any."""
    element = CONTEXT_ELEMENT.get(str(res.get("resourceType")))
    ref = res.get(element) if element else None
    target = ref.get("reference") if isinstance(ref, dict) else None
    return target if isinstance(target, str) else None


def _patient_ref(ref: object, aliases: dict[str, str]) -> str | None:
    if not isinstance(ref, dict):
        return None
    target = ref.get("reference")
    if not isinstance(target, str):
        return None
    if target in aliases:  # urn:uuid: or absolute fullUrl of a Patient in this input
        return aliases[target]
    return _patient_target(target)


@functools.lru_cache(maxsize=4096)
def _patient_target(target: str) -> str | None:
    """ "Patient/<id>" a reference names, if any: kept, as an input's resources name one patient."""
    if target.startswith("Patient/") and target.count("/") == 1 and is_fhir_id(target[8:]):
        return target  # the usual relative reference
    parts = _segments(target)
    if len(parts) >= 2 and parts[-2] == "Patient" and is_fhir_id(parts[-1]):
        return f"Patient/{parts[-1]}"
    return None


def group(
    source: str,
    resources: Sequence[tuple[str, dict[str, Any], str | None]] | Sequence[WithText],
) -> Intake:
    """Assign every mapped resource to its patient; report those that name none.

    ``resources``: (path, resource, fullUrl), or each with its JSON text (``Entry.text``)."""
    rows: Sequence[tuple[str, dict[str, Any], str | None, bytes | None]]
    if resources and len(resources[0]) == 4:
        rows = cast("Sequence[WithText]", resources)
    else:  # four columns: unpacking a row of either length with * costs more than this copy
        rows = [(path, res, url, None) for path, res, url in cast("Sequence[Found]", resources)]
    intake = Intake(source=source)
    aliases: dict[str, str] = {}
    for _path, res, url, _text in rows:
        if res.get("resourceType") == "Patient" and (pid := _patient_id(res, url)) is not None:
            if url:
                aliases[url] = pid
            intake.patients.setdefault(pid, PatientGroup(pid))
    context: ContextIndex = {}  # reference -> (its patient, entry)
    read: list[tuple[str | None, Entry]] = []  # every context resource, input order
    for path, res, url, text in rows:
        rtype = res.get("resourceType")
        if not isinstance(rtype, str):  # a prefetched entry that is no resource
            intake.issues.append(Issue(path, "not a FHIR resource (no resourceType); skipped", "structure"))
            continue
        if rtype not in MAPPED_TYPES:
            continue
        if rtype in CONTEXT_TYPES:
            owner = _patient_ref(res.get("subject"), aliases) or _patient_ref(res.get("patient"), aliases)
            read.append((owner, Entry(path, res, url, text)))
            index_context(context, owner, read[-1][1])
            continue
        bad_id = "id" in res and not (isinstance(rid := res["id"], str) and _is_id(rid) is not None)
        if rtype == "Patient":
            pid = _patient_id(res, url)
            if pid is None:  # every Flag, card and stored fact names the patient by it
                where, what = (f"{path}.id", shown(res["id"])) if bad_id else (f"{path}", "its fullUrl")
                message = f"{what} is not a FHIR id ({FHIR_ID_TEXT}): patient skipped"
                intake.issues.append(Issue(where, message, "value"))
                continue
        else:
            if bad_id:  # its data counts; Flags and cards do not name it by that id
                message = f"{shown(res['id'])} is not a FHIR id ({FHIR_ID_TEXT}): read, not referenced by it"
                intake.issues.append(Issue(f"{path}.id", message, "value", "warning"))
            pid = _patient_ref(res.get("subject"), aliases) or _patient_ref(res.get("patient"), aliases)
            if pid is None:
                intake.issues.append(
                    Issue(
                        path,
                        f"{rtype} names no Patient in subject/patient; skipped",
                        "required",
                        "warning",
                    )
                )
                continue
        patient = intake.patients.get(pid) or intake.patients.setdefault(pid, PatientGroup(pid))
        patient.entries.append(_entry(Entry, (path, res, url, text)))
    if context:
        used: set[int] = set()
        for patient in intake.patients.values():
            used.update(id(e) for e in join_context(patient, context))
        intake.context = [(owner, e) for owner, e in read if id(e) not in used]
    return intake


#: Context resources by every reference that may name them (``Type/id``, fullUrl): (owner, entry).
ContextIndex = dict[str, list[tuple[str | None, Entry]]]


def index_context(context: ContextIndex, owner: str | None, entry: Entry) -> None:
    """File a context resource under the references that find it (its ``Type/id`` and fullUrl)."""
    for key in {reference_of(entry.resource, entry.full_url), entry.full_url}:
        if key:
            context.setdefault(key, []).append((owner, entry))


def join_context(patient: PatientGroup, context: ContextIndex) -> list[Entry]:
    """Add the context resources the patient's resources reference: those of this patient, or
    naming none (never another patient's Encounter), each once. Returns those added (the bulk
    replay names the inputs they came from)."""
    joined: set[str] = set()
    added: list[Entry] = []
    for entry in list(patient.entries):
        target = context_target(entry.resource)
        if target is None:
            continue
        for owner, found in context.get(target, context.get(local_reference(target), ())):
            if owner in (None, patient.pid) and found.path not in joined:
                joined.add(found.path)
                patient.entries.append(found)
                added.append(found)
    return added


def read_json(data: bytes, source: str) -> Intake:
    """One JSON document: a Bundle (any type) or a single resource."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from None
    root = doc.get("resourceType") if isinstance(doc, dict) else None
    return group(source, list(_walk(doc, str(root or "$"), None)))


def read_ndjson(data: bytes, source: str) -> Intake:
    """FHIR Bulk Data NDJSON: one resource per line; a bad line is reported, the rest are read."""
    resources: list[tuple[str, dict[str, Any], str | None]] = []
    issues: list[Issue] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
            resources.extend(_walk(doc, f"line {number}", None))
        except orjson.JSONDecodeError as exc:
            issues.append(Issue(f"line {number}", f"invalid JSON: {exc}", "structure"))
        except InputError as exc:
            issues.append(Issue(f"line {number}", str(exc), "structure"))
    if not resources and issues:
        raise InputError(f"no readable resource ({issues[0].path}: {issues[0].message})")
    intake = group(source, resources)
    intake.issues[:0] = issues
    return intake


def read_bytes(data: bytes, source: str) -> Intake:
    if source.endswith(".ndjson"):
        return read_ndjson(data, source)
    return read_json(data, source)


def read_path(path: Path) -> Intake:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError("empty file")
    return read_bytes(data, str(path))
