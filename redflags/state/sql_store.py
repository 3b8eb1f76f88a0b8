"""The ``StateStore`` methods that are the same SQL on SQLite and PostgreSQL, written once.

``SqliteStateStore`` and ``PostgresStateStore`` derive from ``SqlStateStore`` and keep in their
own modules what differs: connections, transactions and locks (``_read``, ``_write``), the
snapshot and the commit, and the few statements each database spells its own way (the hooks
below: ``_lock_patient``, ``_postpone``, ``_record_events``, ``_executemany``, ``_chosen``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Self

from engine.logger import get_logger
from redflags.state import sql_rows as rows
from redflags.state.model import (
    DEFAULT_TENANT,
    ActiveAlert,
    Delivery,
    Fact,
    ForgetRefused,
    OutboxEvent,
    Status,
    Transition,
    Unfinished,
)
from redflags.state.sql_rows import Dialect

log = get_logger("redflags.state")

#: What ``forget`` would abandon: active alerts, pending and failed outbox items of one patient.
_UNFINISHED = (
    "SELECT (SELECT COUNT(*) FROM active_alert WHERE tenant = ? AND patient = ?), "
    "(SELECT COUNT(*) FROM outbox WHERE tenant = ? AND patient = ? AND status = 'pending'), "
    "(SELECT COUNT(*) FROM outbox WHERE tenant = ? AND patient = ? AND status = 'failed')"
)


def _counts(left: Unfinished) -> dict[str, int]:
    """The audit fields of ``state.forget``: counts only, no identifier."""
    undelivered = left.pending + left.failed
    return {
        "active_alerts": left.active,
        "undelivered": undelivered,
        "pending": left.pending,
        "failed": left.failed,
    }


class SqlStateStore:
    """What both SQL state stores do alike; a subclass sets the class attributes and hooks."""

    _SQL: Dialect
    #: Appended to a read of rows about to be changed (PostgreSQL: ``FOR UPDATE``).
    _FOR_UPDATE = ""
    #: Appended to the due query of a claim (PostgreSQL: lock the rows, skip another's).
    _CLAIM = ""
    #: ``LIMIT`` of no limit.
    _NO_LIMIT: int | None = None

    # -- hooks ------------------------------------------------------------------------------
    def _read(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _lock_patient(self, conn: Any, tenant: str, patient: str) -> None:
        """Serialise a write of one patient with evaluations of it (SQLite's write lock does)."""

    def _executemany(self, conn: Any, sql: str, args: list[tuple[object, ...]]) -> None:
        raise NotImplementedError

    def _postpone(self, conn: Any, ids: Sequence[int], until: int) -> None:
        """Make pending items ``ids`` due at ``until`` (a claim's lease)."""
        raise NotImplementedError

    def _record_events(self, conn: Any, items: Sequence[int], audit: tuple[object, ...]) -> None:
        """One audit row per item; ``audit``: (at, from, to, actor, reason), ``sql_rows.RECORD_EVENTS``."""
        raise NotImplementedError

    def _chosen(self, items: Sequence[int]) -> tuple[str, object]:
        """The condition (`` AND id ...``) and its argument picking ``items``."""
        raise NotImplementedError

    # -- history --------------------------------------------------------------------------
    def history(
        self, patient: str, exclude: Sequence[str] = (), *, tenant: str = DEFAULT_TENANT
    ) -> list[Fact]:
        """In insertion order; a resource sent again moves to the end (its facts were replaced)."""
        skip = set(exclude)
        stored = self.facts_by_resource(patient, tenant=tenant)
        return [f for ref, facts in stored.items() if ref not in skip for f in facts]

    def facts_by_resource(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, list[Fact]]:
        with self._read() as conn:
            return self._facts(conn, tenant, patient)

    def _facts(self, conn: Any, tenant: str, patient: str) -> dict[str, list[Fact]]:
        return rows.facts_of(conn.execute(self._SQL.sql(rows.FACTS), (tenant, patient)).fetchall())

    def _active(self, conn: Any, tenant: str, patient: str) -> dict[str, ActiveAlert]:
        return rows.active_of(conn.execute(self._SQL.sql(rows.ACTIVE), (tenant, patient)).fetchall())

    def forget(self, patient: str, *, tenant: str = DEFAULT_TENANT, force: bool = False) -> int:
        """Also drops the patient's commit number, so an evaluation that read before fails to commit.

        The audit line ``state.forget`` is a warning so that it is written at the CLI's default
        level: with the ledger gone it is the only trace of the erasure (counts, never the id)."""
        with self._write() as conn:
            self._lock_patient(conn, tenant, patient)
            left = self._unfinished(conn, tenant, patient)
            if left and not force:
                log.warning("state.forget_refused", tenant=tenant, **_counts(left))
                raise ForgetRefused(left)
            removed = 0
            for table in rows.PATIENT_TABLES:  # the count is of records: patient_seq is bookkeeping
                sql = self._SQL.sql(f"DELETE FROM {table} WHERE tenant = ? AND patient = ?")
                deleted = conn.execute(sql, (tenant, patient))
                removed += deleted.rowcount if table not in rows.BOOKKEEPING else 0
        log.warning("state.forget", tenant=tenant, records=removed, forced=bool(left), **_counts(left))
        return removed

    def _unfinished(self, conn: Any, tenant: str, patient: str) -> Unfinished:
        """Active alerts and undelivered outbox items of one patient (``_UNFINISHED``)."""
        row = conn.execute(self._SQL.sql(_UNFINISHED), (tenant, patient) * 3).fetchone()
        return Unfinished(*(int(n) for n in row))

    def tenants(self, patient: str | None = None) -> dict[str, int]:
        where, args = self._SQL.where(("patient", patient))
        with self._read() as conn:
            found = conn.execute(self._SQL.sql(rows.TENANTS.replace("{where}", where)), args).fetchall()
        return {tenant: int(n) for tenant, n in found}

    def prune(self, before: int, *, tenant: str | None = None) -> int:
        """Facts without a ``ts`` count as recorded when stored (see ``sqlite_store``'s docstring).

        ``tenant``: that tenant's facts only (a replay at its own clock prunes its own tenant)."""
        where, args = self._SQL.and_where(("tenant", tenant))
        with self._write() as conn:
            removed = conn.execute(self._SQL.sql(rows.PRUNE) + where, (before, *args)).rowcount
        log.info("state.prune", before=before, facts=removed)
        return int(removed)

    # -- ledger ---------------------------------------------------------------------------
    def active(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, ActiveAlert]:
        with self._read() as conn:
            return self._active(conn, tenant, patient)

    def transitions(self, patient: str | None = None, *, tenant: str | None = None) -> list[Transition]:
        where, args = self._SQL.where(("tenant", tenant), ("patient", patient))
        with self._read() as conn:
            found = conn.execute(rows.TRANSITIONS + where + " ORDER BY id", args).fetchall()
        return rows.transitions_of(found)

    # -- outbox ---------------------------------------------------------------------------
    def _due_sql(self, columns: str, tenant: str | None, *, claim: bool = False) -> str:
        sql = self._SQL.sql(rows.due_sql(columns, of_tenant=tenant is not None))
        return sql + (self._CLAIM if claim else "")

    def due(self, now: int, limit: int = 100, *, tenant: str | None = None) -> list[Delivery]:
        with self._read() as conn:
            found = conn.execute(
                self._due_sql(rows.OUTBOX_COLUMNS, tenant), rows.due_args(now, limit, tenant)
            )
            return [rows.delivery(row) for row in found.fetchall()]

    def claim(
        self, now: int, limit: int = 100, lease: int = 60, *, tenant: str | None = None
    ) -> list[Delivery]:
        """``due``, and postpone what it returns by ``lease`` seconds, in one write transaction.

        For several deliverers: two never get the same item, and an item whose deliverer died
        without marking it becomes due again when the lease runs out. (Not in the
        ``StateStore`` protocol; ``due`` alone suits a single deliverer.)
        """
        with self._write() as conn:
            sql = self._due_sql(rows.OUTBOX_COLUMNS, tenant, claim=True)
            found = conn.execute(sql, rows.due_args(now, limit, tenant)).fetchall()
            items = [rows.delivery(row) for row in found]
            self._postpone(conn, [item.id for item in items], now + lease)
        return items

    def mark_delivered(self, item: int, now: int, last_status: str | None = "delivered") -> None:
        """The successful send counts as an attempt too: ``attempts`` is how many sends it took.
        Recorded in the audit trail (pending -> delivered)."""
        self._mark(
            item,
            "delivered",
            rows.MARK_DELIVERED,
            (now, last_status, item),
            event=("pending", "delivered", "delivery", ""),
        )

    def mark_retry(
        self, item: int, next_attempt: int, error: str, last_status: str | None = None, audited: bool = False
    ) -> None:
        """``audited``: also record the deferral in the audit trail (pending -> pending), for
        the rare ones an operator must see (a configuration error), not every transient retry."""
        self._mark(
            item,
            "retry",
            rows.MARK_RETRY,
            (next_attempt, error, last_status, item),
            event=("pending", "pending", "delivery", error) if audited else None,
        )

    def mark_failed(
        self, item: int, error: str, outcome: dict[str, Any] | None, last_status: str | None = None
    ) -> None:
        """Failed for good: the item stops blocking later changes of its patient and rule.
        The change goes into the outbox's audit trail (``outbox_events``)."""
        self._mark(
            item,
            "failed",
            rows.MARK_FAILED,
            (error, rows.dumps(outcome) if outcome is not None else None, last_status, item),
            event=("pending", "failed", "delivery", error),
        )

    def _mark(
        self,
        item: int,
        what: str,
        sql: str,
        args: tuple[object, ...],
        event: tuple[str, str, str, str] | None = None,
    ) -> None:
        """Only a pending item moves: marking twice, or a forgotten item, changes nothing.
        ``event`` (from, to, actor, reason) is recorded in the same transaction as the move."""
        with self._write() as conn:
            changed = conn.execute(self._SQL.sql(sql), args).rowcount
            if changed and event is not None:
                self._record_events(conn, [item], (int(time.time()), *event))
        if not changed:
            log.warning("state.outbox.mark_ignored", item=item, mark=what, reason="not a pending item")

    def retry_now(self, now: int, *, tenant: str | None = None) -> int:
        """Return how many pending items were waiting for a later retry (all pending are now due)."""
        where, args = self._SQL.and_where(("tenant", tenant))
        with self._write() as conn:
            return int(conn.execute(self._SQL.sql(rows.RETRY_NOW) + where, (now, now, *args)).rowcount)

    def counts(self, *, tenant: str | None = None) -> dict[Status, int]:
        where, args = self._SQL.where(("tenant", tenant))
        with self._read() as conn:
            found = conn.execute(rows.COUNTS.replace("{where}", where), args).fetchall()
        return rows.counts_of(found)

    def deliveries(self, status: Status | None = None, *, tenant: str | None = None) -> list[Delivery]:
        where, args = self._SQL.where(("tenant", tenant), ("status", status))
        with self._read() as conn:
            sql = f"SELECT {rows.OUTBOX_COLUMNS} FROM outbox{where} ORDER BY id"
            found = conn.execute(sql, args).fetchall()
        return [rows.delivery(row) for row in found]

    def oldest_pending(self) -> int | None:
        with self._read() as conn:  # outbox_status (status, id): the first pending row, no scan
            row = conn.execute(rows.OLDEST_PENDING).fetchone()
        return int(row[0]) if row else None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- delivery: bounded batches, one body at a time, retention ----------------------------
    def due_ids(self, now: int, limit: int = 100) -> list[int]:
        """The ids ``due`` would return, without reading a bundle."""
        with self._read() as conn:
            found = conn.execute(self._due_sql("o.id", None), (now, limit)).fetchall()
        return [int(row[0]) for row in found]

    def claim_ids(self, now: int, limit: int = 100, lease: int = 60) -> list[int]:
        """``claim`` returning ids only: the deliverer reads each bundle when it sends it."""
        with self._write() as conn:
            found = conn.execute(self._due_sql("o.id", None, claim=True), (now, limit)).fetchall()
            ids = [int(row[0]) for row in found]
            self._postpone(conn, ids, now + lease)
        return ids

    def delivery(self, item: int) -> Delivery | None:
        """One outbox item with its bundle (None if it is gone, e.g. forgotten)."""
        with self._read() as conn:
            row = conn.execute(self._SQL.sql(rows.DELIVERY), (item,)).fetchone()
        return rows.delivery(row) if row is not None else None

    def next_due(self) -> int | None:
        """When the next item can be sent (its ``next_attempt``), counting only items that are
        not waiting behind an earlier one of their patient and rule; None when none is pending."""
        with self._read() as conn:
            sql = f"SELECT MIN(next_attempt) FROM ({self._due_sql('o.next_attempt', None)}) AS d"
            row = conn.execute(sql, (rows.FOREVER, self._NO_LIMIT)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def revise(self, item: int, bundle: dict[str, Any], note: dict[str, Any]) -> bool:
        """Replace a pending item's bundle by the one to send instead, keeping ``note`` (an
        OperationOutcome saying why) in its ``outcome``; False if the item is not pending."""
        with self._write() as conn:
            args = (rows.dumps(bundle), rows.dumps(note), item)
            changed = conn.execute(self._SQL.sql(rows.REVISE), args).rowcount
        return bool(changed)

    def revise_active(
        self, item: int, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
    ) -> bool:
        """In the ledger entry of ``item``'s patient and rule, replace the Flag and CarePlan sent
        (``before["Flag"]``, ``before["CarePlan"]``) by those actually delivered, only if the
        entry still holds exactly ``before`` (a later evaluation's alert is left alone)."""
        with self._write() as conn:
            return rows.revise_alert(conn, self._SQL, item, before, after, lock=self._FOR_UPDATE)

    def purge_delivered(self, before: int) -> int:
        """Delete delivered outbox items delivered before ``before`` (epoch s); return how many.
        Pending and failed items stay: they still need a deliverer or an operator."""
        with self._write() as conn:
            removed = int(conn.execute(self._SQL.sql(rows.PURGE_DELIVERED), (before,)).rowcount)
            if removed:  # the audit trail of an item goes with it
                conn.execute(rows.PURGE_EVENTS)
        if removed:
            log.info("state.outbox.purged", before=before, items=removed)
        return removed

    # -- operators: failed items put back in the queue, audit trail ---------------------------
    def retry_failed(
        self,
        items: Sequence[int] | None,
        now: int,
        actor: str = "operator",
        *,
        tenant: str | None = None,
    ) -> list[int]:
        """Put failed items (``items``, or every failed one when None) back in the queue, due
        at once, attempts and last reason kept; return the ids moved. Each move is recorded in
        the audit trail (failed -> pending, ``actor``) in the same transaction.

        An item with a later change of the same tenant, patient and rule queued after it is
        superseded and stays failed: sending it would put an older Flag over a newer one (or
        raise again an alert since withdrawn)."""
        where, args = self._SQL.and_where(("tenant", tenant))
        if items is not None:
            chosen, picked = self._chosen(items)
            where, args = where + chosen, (*args, picked)
        with self._write() as conn:
            sql = rows.FAILED + where + " ORDER BY id" + self._FOR_UPDATE
            ids = [int(row[0]) for row in conn.execute(sql, args).fetchall()]
            self._executemany(conn, self._SQL.sql(rows.UNFAIL), [(now, item) for item in ids])
            self._record_events(conn, ids, (now, "failed", "pending", actor, "retry by operator"))
        if ids:
            log.info("state.outbox.retried", items=len(ids), actor=actor)
        return ids

    def outbox_events(self, item: int | None = None, *, tenant: str | None = None) -> list[OutboxEvent]:
        """The audit trail of outbox items (of one item, or of one tenant's), oldest first."""
        where, args = self._SQL.where(("item", item), ("tenant", tenant))
        with self._read() as conn:
            found = conn.execute(rows.OUTBOX_EVENTS + where + " ORDER BY id", args).fetchall()
        return rows.events_of(found)
