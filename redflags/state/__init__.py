"""What redflags remembers: patient history, alert ledger and outbox; CDS feedback; used JWT ids.

``model`` holds the interfaces (``StateStore``, ``FeedbackStore``, ``JtiStore``) and records;
``sqlite_store``, ``feedback`` and ``jti`` the embedded SQLite implementations, all opened
through ``sqlite_file``; ``location`` names where a site's stores are and ``stores`` opens
them (``open_stores``). A networked database adds implementations of the same protocols.
"""
