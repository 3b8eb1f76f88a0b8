"""What redflags remembers: patient history, alert ledger and outbox; CDS feedback; used JWT ids.

``model`` holds the interfaces (``StateStore``, ``FeedbackStore``, ``JtiStore``) and records;
``sqlite_store``, ``feedback`` and ``jti`` the embedded SQLite implementations, all opened
through ``sqlite_file``; ``postgres_state``, ``postgres_feedback`` and ``postgres_jti`` the
networked ones, shared by several hosts, opened through ``postgres_db`` (psycopg is imported
only for a ``postgresql://`` URL); ``location`` names where a site's stores are and ``stores``
opens them (``open_stores``).
"""
