"""The HTTP service: CDS Hooks 2.0 for EHRs and ``$evaluate`` for integration engines.

One HTTP process hands every evaluation to engine processes (``redflags.workers.pool``); each
holds the ``Pipeline`` of ``--config`` and of every ``--site`` (``redflags.service.sites``) and
evaluates on its engine thread, never on the event loop.
"""
