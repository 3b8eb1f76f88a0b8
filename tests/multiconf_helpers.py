"""What the multi-site tests run inside an engine process (module level: sent by name)."""

from __future__ import annotations

import os

from redflags.pipeline import Pipeline


def which_rules(pipeline: Pipeline) -> tuple[int, float, str]:
    """This process, the site's post-void residual threshold and its durable ruleset's name."""
    return (
        os.getpid(),
        pipeline.engine.params["cauda_equina_syndrome"]["pvr_ml"],
        pipeline.engine._shared.name,
    )
