"""What the SQLite and PostgreSQL state stores share: SQL texts, rows <-> records, the encoding
done before a commit.

The two stores hold the same records in the same tables, so everything but connections,
locks, transactions and schemas is written once here (a second copy drifts). SQL texts are
written with ``?`` placeholders and ``{collate}`` where an ORDER BY must sort by code point;
``Dialect.sql`` spells them for one database (``SQLITE``: as written, binary order is the
default; ``POSTGRES``: ``%s`` and ``COLLATE "C"``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from redflags.state.model import (
    ActiveAlert,
    Change,
    Delivery,
    Evaluated,
    Fact,
    OutboxEvent,
    StateStoreError,
    Status,
    Transition,
)


@dataclass(frozen=True)
class Dialect:
    """How one database spells a placeholder and a code-point sort."""

    param: str
    collate: str

    def sql(self, text: str) -> str:
        """``text`` (``?`` placeholders, ``{collate}``) in this dialect; texts hold no literal ``?``."""
        return _spell(text, self.param, self.collate)

    def where(self, *conditions: tuple[str, object]) -> tuple[str, tuple[object, ...]]:
        """`` WHERE a = ? AND b = ?`` for the conditions whose value is not None (column names are ours)."""
        given = [(column, value) for column, value in conditions if value is not None]
        if not given:
            return "", ()
        clause = " AND ".join(f"{column} = {self.param}" for column, _ in given)
        return " WHERE " + clause, tuple(v for _, v in given)

    def and_where(self, *conditions: tuple[str, object]) -> tuple[str, tuple[object, ...]]:
        """``where``, to follow a WHERE clause already written."""
        where, args = self.where(*conditions)
        return where.replace(" WHERE ", " AND ", 1), args


@functools.cache
def _spell(text: str, param: str, collate: str) -> str:
    """``Dialect.sql``, once per text (the stores spell the same few texts on every call)."""
    return text.replace("?", param).replace("{collate}", collate)


SQLITE = Dialect(param="?", collate="")
POSTGRES = Dialect(param="%s", collate=' COLLATE "C"')

STATUSES: tuple[Status, ...] = ("pending", "delivered", "failed")
#: Tables holding one tenant's patients (``forget`` empties them for one patient).
PATIENT_TABLES = ("fact", "active_alert", "transition", "outbox", "patient_seq", "outbox_event")
#: Bookkeeping of a patient's records, erased with them but not counted as records.
BOOKKEEPING = frozenset({"patient_seq", "outbox_event"})

# -- SQL texts (``?`` placeholders; ``Dialect.sql``) ---------------------------------------
OUTBOX_COLUMNS = (
    "id, patient, rule, change, bundle, status, attempts, next_attempt, created, delivered, "
    "last_error, outcome, tenant, last_status"
)
#: The oldest pending item of each (tenant, patient, rule) only: a later change waits for the
#: earlier one. Parameters (now, limit), or (now, tenant, limit) with ``DUE_OF_TENANT``.
DUE_WHERE = """
WHERE o.status = 'pending' AND o.next_attempt <= ?{tenant}
  AND NOT EXISTS (
      SELECT 1 FROM outbox e
      WHERE e.tenant = o.tenant AND e.patient = o.patient AND e.rule = o.rule
        AND e.status = 'pending' AND e.id < o.id
  )
ORDER BY o.id LIMIT ?
"""
DUE_OF_TENANT = " AND o.tenant = ?"


def due_sql(columns: str, of_tenant: bool) -> str:
    """The due items' ``columns`` (parameters as ``DUE_WHERE`` says)."""
    return f"SELECT {columns} FROM outbox o" + DUE_WHERE.format(tenant=DUE_OF_TENANT if of_tenant else "")


def due_args(now: int, limit: int | None, tenant: str | None) -> tuple[object, ...]:
    return (now, limit) if tenant is None else (now, tenant, limit)


#: A failed item with no later change of its tenant, patient and rule (alias ``o``).
NOT_SUPERSEDED = (
    " AND NOT EXISTS (SELECT 1 FROM outbox l WHERE l.tenant = o.tenant AND l.patient = o.patient"
    " AND l.rule = o.rule AND l.id > o.id)"
)
FACTS = "SELECT ref, body FROM fact WHERE tenant = ? AND patient = ? ORDER BY id"
ACTIVE = "SELECT rule, body FROM active_alert WHERE tenant = ? AND patient = ? ORDER BY rule{collate}"
SEQ = "SELECT seq FROM patient_seq WHERE tenant = ? AND patient = ?"
#: ``{where}``: ``Dialect.where`` on ``patient``.
TENANTS = (
    "SELECT tenant, COUNT(DISTINCT patient) FROM ("
    "SELECT tenant, patient FROM fact UNION SELECT tenant, patient FROM active_alert "
    "UNION SELECT tenant, patient FROM transition "
    "UNION SELECT tenant, patient FROM outbox) AS p{where} "
    "GROUP BY tenant ORDER BY tenant{collate}"
)
PRUNE = "DELETE FROM fact WHERE ts < ?"
TRANSITIONS = "SELECT patient, rule, change, tier, at, actor, evidence, reason, tenant FROM transition"
DELETE_FACTS = "DELETE FROM fact WHERE tenant = ? AND patient = ? AND ref = ?"
INSERT_FACT = "INSERT INTO fact (tenant, patient, ref, ts, body) VALUES (?, ?, ?, ?, ?)"
DELETE_ACTIVE = "DELETE FROM active_alert WHERE tenant = ? AND patient = ?"
INSERT_ACTIVE = "INSERT INTO active_alert (tenant, patient, rule, body) VALUES (?, ?, ?, ?)"
INSERT_TRANSITION = (
    "INSERT INTO transition (tenant, patient, rule, change, tier, at, actor, evidence, reason) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (tenant, patient, rule, change, bundle, status, attempts, "
    "next_attempt, created) VALUES (?, ?, ?, ?, ?, 'pending', 0, 0, ?)"
)
MARK_DELIVERED = (
    "UPDATE outbox SET status = 'delivered', delivered = ?, attempts = attempts + 1, "
    "last_error = NULL, last_status = ? WHERE id = ? AND status = 'pending'"
)
MARK_RETRY = (
    "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?, last_status = ? "
    "WHERE id = ? AND status = 'pending'"
)
MARK_FAILED = (
    "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?, outcome = ?, "
    "last_status = ? WHERE id = ? AND status = 'pending'"
)
RETRY_NOW = "UPDATE outbox SET next_attempt = ? WHERE status = 'pending' AND next_attempt > ?"
COUNTS = "SELECT status, COUNT(*) FROM outbox{where} GROUP BY status"
OLDEST_PENDING = "SELECT created FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1"
DELIVERY = f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?"
REVISE = "UPDATE outbox SET bundle = ?, outcome = ? WHERE id = ? AND status = 'pending'"
OUTBOX_KEY = "SELECT tenant, patient, rule FROM outbox WHERE id = ?"
ALERT_BODY = "SELECT body FROM active_alert WHERE tenant = ? AND patient = ? AND rule = ?"
UPDATE_ALERT = "UPDATE active_alert SET body = ? WHERE tenant = ? AND patient = ? AND rule = ?"
PURGE_DELIVERED = "DELETE FROM outbox WHERE status = 'delivered' AND delivered < ?"
#: The audit trail of an item goes with it.
PURGE_EVENTS = (
    "DELETE FROM outbox_event WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = outbox_event.item)"
)
FAILED = "SELECT id FROM outbox o WHERE status = 'failed'" + NOT_SUPERSEDED
UNFAIL = "UPDATE outbox SET status = 'pending', next_attempt = ? WHERE id = ? AND status = 'failed'"
#: One audit row per item, its tenant, patient and rule copied from the outbox row; the
#: dialect's store adds which items (``WHERE ...``).
RECORD_EVENTS = (
    "INSERT INTO outbox_event (item, tenant, patient, rule, at, from_status, to_status, actor, reason) "
    "SELECT id, tenant, patient, rule, ?, ?, ?, ?, ? FROM outbox WHERE "
)
OUTBOX_EVENTS = (
    "SELECT item, tenant, patient, rule, at, from_status, to_status, actor, reason FROM outbox_event"
)
#: ``next_due``'s ``now``: later than any ``next_attempt``.
FOREVER = 2**62


# -- records -> rows ------------------------------------------------------------------------
def dumps(value: object) -> bytes:
    return orjson.dumps(value)


def fact_ts(fact: Fact, stored: int) -> int:
    """A fact's record time for ``prune``: its numeric ``ts``, else when it was stored."""
    ts = fact.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return int(ts)
    return stored


def alert_json(alert: ActiveAlert) -> bytes:
    return dumps(
        {
            "patient": alert.patient,
            "rule": alert.rule,
            "tier": alert.tier,
            "severity": alert.severity,
            "flag": alert.flag,
            "careplan": alert.careplan,
            "since": alert.since,
            "evidence": list(alert.evidence),
        }
    )


@dataclass(frozen=True)
class Encoded:
    """One evaluation's rows, without tenant and patient (the store puts them first)."""

    facts: list[tuple[str, list[tuple[int, bytes]]]]
    active: list[tuple[str, bytes]]
    transitions: list[tuple[object, ...]]
    deliveries: list[tuple[str, str, bytes]]


def encode(evaluated: Evaluated, where: object) -> Encoded:
    """Check and serialise before the transaction: a fact that is not JSON fails without
    holding a lock. ``where`` names the store in the error."""
    check(evaluated)
    now = evaluated.now
    try:
        return Encoded(
            facts=[
                (ref, [(fact_ts(f, now), dumps(f)) for f in items]) for ref, items in evaluated.facts.items()
            ],
            active=[(rule, alert_json(alert)) for rule, alert in evaluated.active.items()],
            transitions=[
                (t.rule, t.change, t.tier, t.at, t.actor, dumps(list(t.evidence)), t.reason)
                for t in evaluated.transitions
            ],
            deliveries=[(d.rule, d.change, dumps(d.bundle)) for d in evaluated.deliveries],
        )
    except orjson.JSONEncodeError as exc:
        raise StateStoreError(f"{where}: cannot store evaluation: {one_line(exc)}") from None


def check(evaluated: Evaluated) -> None:
    """Records of another patient in one evaluation are a caller's bug: refuse before writing."""
    patient = evaluated.patient
    records: list[tuple[str, str]] = [(a.patient, "active alert") for a in evaluated.active.values()]
    records += [(t.patient, "transition") for t in evaluated.transitions]
    records += [(d.patient, "delivery") for d in evaluated.deliveries]
    for other, what in records:
        if other != patient:
            raise ValueError(f"{what} of another patient in one evaluation")
    for rule, alert in evaluated.active.items():
        if alert.rule != rule:
            raise ValueError(f"active alert keyed {rule!r} is for rule {alert.rule!r}")


# -- rows -> records ------------------------------------------------------------------------
def alert(body: bytes) -> ActiveAlert:
    data = orjson.loads(body)
    data["evidence"] = tuple(data["evidence"])
    return ActiveAlert(**data)


def delivery(row: Sequence[Any]) -> Delivery:
    """One row of ``OUTBOX_COLUMNS``."""
    (
        item,
        patient,
        rule,
        change,
        bundle,
        status,
        attempts,
        next_attempt,
        created,
        delivered,
        error,
        outcome,
        tenant,
        last_status,
    ) = row
    return Delivery(
        id=item,
        patient=patient,
        rule=rule,
        change=change,
        bundle=orjson.loads(bundle),
        status=status,
        attempts=attempts,
        next_attempt=next_attempt,
        created=created,
        delivered=delivered,
        last_error=error,
        outcome=orjson.loads(outcome) if outcome is not None else None,
        tenant=tenant,
        last_status=last_status,
    )


def transitions_of(rows: Sequence[Sequence[Any]]) -> list[Transition]:
    """Rows of ``TRANSITIONS``."""
    return [
        Transition(
            patient=p,
            rule=rule,
            change=cast(Change, change),
            tier=tier,
            at=at,
            actor=actor,
            evidence=tuple(orjson.loads(evidence)),
            reason=reason,
            tenant=t,
        )
        for p, rule, change, tier, at, actor, evidence, reason, t in rows
    ]


def facts_of(rows: Sequence[Sequence[Any]]) -> dict[str, list[Fact]]:
    """Rows of ``FACTS``, by resource in insertion order."""
    found: dict[str, list[Fact]] = {}
    for ref, body in rows:
        found.setdefault(ref, []).append(orjson.loads(body))
    return found


def active_of(rows: Sequence[Sequence[Any]]) -> dict[str, ActiveAlert]:
    """Rows of ``ACTIVE``."""
    return {rule: alert(bytes(body)) for rule, body in rows}


def seq_of(row: Sequence[Any] | None) -> int:
    """The row of ``SEQ`` (0: the patient was never committed)."""
    return int(row[0]) if row else 0


def counts_of(rows: Sequence[Sequence[Any]]) -> dict[Status, int]:
    """Rows of ``COUNTS``, every status present."""
    found = {status: int(n) for status, n in rows}
    return {status: found.get(status, 0) for status in STATUSES}


def events_of(rows: Sequence[Sequence[Any]]) -> list[OutboxEvent]:
    """Rows of ``OUTBOX_EVENTS``."""
    return [OutboxEvent(*row) for row in rows]


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def revise_alert(
    conn: Any,
    dialect: Dialect,
    item: int,
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    lock: str = "",
) -> bool:
    """``revise_active`` inside the store's write transaction on ``conn``; ``lock`` is appended
    to the read of the ledger entry (PostgreSQL: ``FOR UPDATE``)."""
    key = conn.execute(dialect.sql(OUTBOX_KEY), (item,)).fetchone()
    if key is None:
        return False
    body = conn.execute(dialect.sql(ALERT_BODY) + lock, tuple(key)).fetchone()
    if body is None:
        return False
    stored = orjson.loads(body[0])
    if stored["flag"] != before.get("Flag") or stored["careplan"] != before.get("CarePlan"):
        return False
    stored["flag"], stored["careplan"] = after["Flag"], after["CarePlan"]
    conn.execute(dialect.sql(UPDATE_ALERT), (dumps(stored), *key))
    return True
