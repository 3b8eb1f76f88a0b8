"""Entry point of an engine process: ``python -m redflags.service.engine_worker`` (see engine_pool)."""

from redflags.service.engine_pool import serve_engine

if __name__ == "__main__":
    serve_engine()
