"""The documentation's Python examples stay true to the code: they parse, and every
``archer_agents`` name they import exists where they import it from.

(The README's examples also run end to end, in test_readme.py; the docs site
itself is built strictly by ``make docs``.)
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks() -> list[pytest.ParameterSet]:
    params = []
    for page in PAGES:
        for index, block in enumerate(BLOCK.findall(page.read_text())):
            name = f"{page.relative_to(ROOT)}#{index}"
            params.append(pytest.param(block, id=name))
    return params


def project_imports(tree: ast.AST) -> list[tuple[str, str | None]]:
    """(module, name) for each ``archer_agents`` import; name None for ``import module``."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("archer_agents"):
            found += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("archer_agents")]
    return found


def test_the_pages_have_python_examples() -> None:
    assert len(python_blocks()) >= 10


@pytest.mark.parametrize("block", python_blocks())
def test_an_example_parses_and_its_imports_exist(block: str) -> None:
    tree = ast.parse(block)
    for module_name, name in project_imports(tree):
        module = importlib.import_module(module_name)
        if name is not None and not hasattr(module, name):
            importlib.import_module(f"{module_name}.{name}")  # a submodule, or ImportError
