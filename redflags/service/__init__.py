"""The HTTP service: CDS Hooks 2.0 for EHRs and ``$evaluate`` for integration engines.

One ASGI application per worker process (``redflags serve``); each process holds one
``Pipeline`` (durable-rules hosts one ruleset per process) and evaluates on its engine thread,
never on the event loop.
"""
