"""The rules engine. Importing it checks that durable-rules is redflags' patched build."""

from engine.engine_build import require_patched_engine

require_patched_engine()
