"""docs/plugins.md documents every hook with its exact signature and firstresult flag (datasette-style)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from qvl_agent import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def hook_specs() -> dict[str, object]:
    return {name: fn for name, fn in vars(hookspecs).items() if hasattr(fn, f"{hookspecs.PROJECT_NAME}_spec")}


def signature(fn) -> str:
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{fn.__name__}({params}) -> {sig.return_annotation}"


def doc_problems(text: str) -> list[str]:
    """Every way the hook documentation disagrees with hookspecs.py."""
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^#{1,3} |\Z)", text, flags=re.MULTILINE | re.DOTALL))
    problems = []
    for name, fn in hook_specs().items():
        section = sections.get(name)
        if section is None:
            problems.append(f"{name}: not documented")
            continue
        if f"`{signature(fn)}`" not in section:
            problems.append(f"{name}: signature `{signature(fn)}` missing")
        firstresult = getattr(fn, f"{hookspecs.PROJECT_NAME}_spec")["firstresult"]
        if f"**firstresult**: {'yes' if firstresult else 'no'}" not in section:
            problems.append(f"{name}: firstresult should be {'yes' if firstresult else 'no'}")
        if "```python" not in section:
            problems.append(f"{name}: no example")
    hooks_part = text.split("## Hooks", 1)[-1]
    for name in re.findall(r"^### (\w+)", hooks_part, flags=re.MULTILINE):
        if name not in hook_specs():
            problems.append(f"{name}: documented but not a hook")
    return problems


def test_every_hook_is_documented_with_its_exact_signature():
    assert len(hook_specs()) >= 6
    assert doc_problems(DOCS.read_text()) == []


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_the_check_fails_when_a_hook_is_missing_or_wrong(name):
    text = DOCS.read_text()
    start = text.index(f"### {name}\n")
    end = text.find("\n### ", start + 1)
    without = text[:start] + (text[end + 1 :] if end >= 0 else "")
    assert f"{name}: not documented" in doc_problems(without)
    wrong = text.replace(f"`{signature(hook_specs()[name])}`", f"`{name}()`")
    assert f"{name}: signature" in " ".join(doc_problems(wrong))


def test_every_hookspec_has_param_and_return_docs():
    for name, fn in hook_specs().items():
        doc = inspect.getdoc(fn)
        for param in inspect.signature(fn).parameters:
            assert f":param {param}:" in doc, f"{name} does not document {param}"
        assert ":return:" in doc and "Example::" in doc, name
