"""One evaluation path (issue 13 item 5), read from the source (AST, no execution).

Every entry point (replay per file and by partition, --jobs workers and Spark executors, the
service's CDS answer and ``$evaluate``) calls ``Pipeline.evaluate`` on a pipeline it is handed;
the pipeline alone calls the engine; no other class evaluates (b855ee8 had ``Tracker.evaluate``
beside it, callers switching with ``isinstance``); and no module looks the pipeline up through
a module-global ``pipeline()`` (b855ee8: the CDS answer and ``$evaluate``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "redflags"
PIPELINE = PACKAGE / "pipeline.py"
#: Entry points and the functions in them that evaluate (each through a ``Pipeline`` parameter).
ENTRY_POINTS = {
    "replay/per_file.py": "replay",
    "replay/partition.py": "_evaluate_groups",
    "service/cds/answer.py": "answer",
    "service/evaluate/routes.py": "evaluate_body",
}
ENGINE_METHODS = frozenset({"evaluate", "evaluate_many"})


def _trees(root: Path = PACKAGE) -> dict[Path, ast.Module]:
    files = sorted(root.rglob("*.py"))
    assert files, f"no Python files under {root}"
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in files}


def engine_calls(tree: ast.AST) -> list[int]:
    """Lines calling ``<...>.engine.evaluate*`` or ``engine.evaluate*``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            named = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if node.func.attr in ENGINE_METHODS and named == "engine":
                lines.append(node.lineno)
    return sorted(lines)


def test_only_the_pipeline_calls_the_engine() -> None:
    trees = _trees()
    elsewhere = [
        f"{path.relative_to(ROOT)}:{line}"
        for path, tree in trees.items()
        if path != PIPELINE
        for line in engine_calls(tree)
    ]
    assert elsewhere == []
    assert len(engine_calls(trees[PIPELINE])) == 2  # not vacuous: evaluate and evaluate_many


def test_no_other_class_evaluates() -> None:
    evaluators = [
        f"{path.relative_to(ROOT)}:{node.name}"
        for path, tree in _trees().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(isinstance(f, ast.FunctionDef) and f.name == "evaluate" for f in node.body)
    ]
    assert evaluators == ["redflags/pipeline.py:Pipeline"]


def test_no_module_global_pipeline_lookup() -> None:
    lookups = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path, tree in _trees().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "pipeline"
        and not node.args
        and not node.keywords
    ]
    assert lookups == []


def _evaluates_a_pipeline_parameter(function: ast.FunctionDef) -> bool:
    """``function`` calls ``p.evaluate(...)`` on a parameter ``p`` annotated ``Pipeline`` (only)."""
    pipelines = {
        a.arg
        for a in (*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs)
        if a.annotation is not None and ast.unparse(a.annotation) in {"Pipeline", "'Pipeline'"}
    }
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "evaluate"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in pipelines
        for node in ast.walk(function)
    )


def test_every_entry_point_evaluates_through_the_pipeline_it_is_handed() -> None:
    trees = _trees()
    missing = []
    for module, name in ENTRY_POINTS.items():
        (function,) = [
            n for n in ast.walk(trees[PACKAGE / module]) if isinstance(n, ast.FunctionDef) and n.name == name
        ]
        if not _evaluates_a_pipeline_parameter(function):
            missing.append(f"{module}:{name}")
    assert missing == []


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """Not vacuous: an engine call, a second evaluating class and a global lookup are each found."""
    (tmp_path / "bad.py").write_text(
        "class Tracker:\n"
        "    def evaluate(self, intake, now):\n"
        "        return self.pipeline.engine.evaluate('p', [], now)\n"
        "def answer(body):\n"
        "    return pipeline().engine.evaluate_many([], 0)\n"
        "def replay(files, pipeline: 'Pipeline | Tracker', now):\n"
        "    return pipeline.evaluate(files, now)\n"
    )
    tree = _trees(tmp_path)[tmp_path / "bad.py"]
    assert engine_calls(tree) == [3, 5]
    assert [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)] == ["Tracker"]
    replay = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "replay")
    assert not _evaluates_a_pipeline_parameter(replay)  # a union is not the one path
