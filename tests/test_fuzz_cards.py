"""Card markdown names records in code spans: a reference is shown as sent, never a link or markup.

An id-less resource is named by its fullUrl; before, ``https://evil.example/x`` went into the
card detail as text (escaped for markup, but a bare URL autolinks in GitHub-flavoured
renderers), and a line break in it could start a heading. Rendered here with markdown-it
(CommonMark): each reference must come out whole, inside one ``<code>`` element.
"""

from __future__ import annotations

import html

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from engine.alert import Alert, Criterion
from redflags.service.cds.cards import detail
from rulesets.cauda_equina_syndrome import META as CES

RENDER = MarkdownIt("commonmark").render


def _alert(refs: tuple[str, ...]) -> Alert:
    return Alert(
        patient="Patient/p1",
        rule=CES.id,
        version=CES.version,
        tier="A",
        severity="critical",
        title=CES.title,
        rationale="x",
        criteria=(Criterion("Saddle anaesthesia on 2025-03-10 09:00", refs),),
        evidence=refs,
        now=1741608000,
        episode="2025-03-10",
    )


def _criterion_html(refs: tuple[str, ...]) -> str:
    rendered = RENDER(detail(_alert(refs), CES))
    (line,) = [li.split("</li>")[0] for li in rendered.split("<li>") if "Saddle anaesthesia" in li]
    return line


@pytest.mark.parametrize(
    ("ref", "shown"),
    [
        ("https://evil.example/x", "https://evil.example/x"),
        ("Observation/o1", "Observation/o1"),
        ("urn:uuid:0b3c2c7c-6f0e-4b8e-9a53-0d8c0ed2d6a1", "urn:uuid:0b3c2c7c-6f0e-4b8e-9a53-0d8c0ed2d6a1"),
        ("a`b", "a`b"),
        ("`x`", "`x`"),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
        ("a\n\n# heading", "a  # heading"),
    ],
)
def test_a_reference_is_one_code_span(ref: str, shown: str) -> None:
    line = _criterion_html((ref,))
    assert f"<code>{html.escape(shown, quote=True)}</code>" in line
    assert "<a " not in line and "<h1>" not in line


def test_the_markdown_of_a_criterion_puts_each_reference_in_backticks() -> None:
    text = detail(_alert(("Observation/o1", "https://evil.example/x")), CES)
    assert "- Saddle anaesthesia on 2025-03-10 09:00 (`Observation/o1`, `https://evil.example/x`)\n" in text


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda t: t.strip() != ""), min_size=1, max_size=3))
def test_any_reference_renders_inside_code_and_nowhere_else(refs: list[str]) -> None:
    line = _criterion_html(tuple(refs))
    assert line.count("<code>") == len(refs)
    assert "<a " not in line
