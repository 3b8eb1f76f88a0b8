"""Every error the engine raises, in one place: a failed evaluation is never silent."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: the evaluation of one patient failed and produced no alerts."""


class RuleActionError(EngineError):
    """A rule action raised; durable-rules would have swallowed it into the session state."""


class FactRejectedError(EngineError):
    """durable-rules refused a fact (e.g. reported a distinct fact as already observed)."""


class CrossTalkError(EngineError):
    """A rule matched a fact of another patient: the isolation guarantee was broken."""


class RuleDefinitionError(EngineError):
    """A ruleset module is malformed (unknown tier, missing metadata, ...)."""
