"""What redflags remembers between evaluations: patient history, the alert ledger, the outbox.

``model`` is the interface (records and the ``StateStore`` protocol); ``sqlite_store`` the
embedded default. A networked database replaces it by implementing the same protocol.
"""
