"""Entry point of an engine process: ``python -m redflags.workers.process`` (see ``workers.pool``)."""

from redflags.workers.pool import serve_engine

if __name__ == "__main__":
    serve_engine()
