"""``--fhir-token-file FILE``: the write-back bearer token from a file instead of the command line.

A token given as ``--fhir-token VALUE`` is in the process list (``ps``, ``/proc/<pid>/cmdline``)
for every local user to read; ``$REDFLAGS_FHIR_TOKEN`` or a file readable by the service's user
only keeps it out. ``--fhir-token`` still works, with a warning. The file holds the token on one
line (surrounding whitespace ignored); a file others may read is named in a warning.

Click gives every option its own value; these two callbacks merge them into the one
``fhir_token`` parameter whatever order they are processed in, so commands keep their signature.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import click
from click.core import ParameterSource

from engine.logger import get_logger

log = get_logger("redflags.cli")

_META = "redflags.fhir_token_file"
#: What may follow "Bearer " (RFC 6750 b64token): no spaces, no control characters.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAX_BYTES = 64 * 1024


def _bad(message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint="--fhir-token-file")


def read_token_file(path: Path) -> str:
    """The one token in PATH, or a click error naming the file (never its content)."""
    try:
        info = path.stat()
        if info.st_size > _MAX_BYTES:
            raise _bad(f"{path}: larger than {_MAX_BYTES} bytes")
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise _bad(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise _bad(f"{path}: not UTF-8 text") from None
    if not _TOKEN_RE.fullmatch(text):
        raise _bad(f"{path}: not one bearer token (one line, RFC 6750 characters)")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("fhir_token_file_shared", path=str(path), detail="readable by others: chmod 600")
    return text


def _token_file(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is None:
        return
    token = read_token_file(value)
    ctx.meta[_META] = token
    if "fhir_token" in ctx.params:  # --fhir-token was processed first: merge here
        ctx.params["fhir_token"] = _merged(ctx, ctx.params["fhir_token"], token)


def fhir_token_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of ``--fhir-token``: its value, or the file's token; warns when it was on argv."""
    assert param.name is not None
    if value and ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE:
        log.warning(
            "fhir_token_on_command_line",
            detail="visible to every local user in the process list: use --fhir-token-file or "
            "$REDFLAGS_FHIR_TOKEN",
        )
    return _merged(ctx, value, ctx.meta.get(_META))


def _merged(ctx: click.Context, value: str | None, from_file: str | None) -> str | None:
    if value and from_file:
        raise click.UsageError("give --fhir-token (or $REDFLAGS_FHIR_TOKEN) or --fhir-token-file, not both")
    return from_file or value


#: Decorator adding ``--fhir-token-file`` to a command whose ``--fhir-token`` has the callback.
fhir_token_file_option = click.option(
    "--fhir-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    expose_value=False,
    callback=_token_file,
    help="File holding the bearer token for --fhir-server (kept out of the process list).",
)
