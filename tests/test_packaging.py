"""The wheel holds every module under the one `archer_agents` namespace, and imports."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {
    "archer_agents": "archer_agents",
    "tools": "archer_agents/tools",
    "environments": "archer_agents/environments",
    "training": "archer_agents/training",
}


def source_modules() -> set[str]:
    """Every tracked-or-not Python file of the four source folders, as wheel paths."""
    expected = set()
    for folder, target in MAPPING.items():
        for path in (ROOT / folder).rglob("*"):
            if "__pycache__" in path.parts or path.suffix not in {".py", ".json"}:
                continue
            expected.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    return expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (path,) = out.glob("archer_agents-*.whl")
    return path


@pytest.mark.slow
def test_wheel_contains_every_module_under_one_namespace(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = source_modules() - names
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {"archer_agents"}, f"unexpected top-level entries: {top_level}"


@pytest.mark.slow
def test_every_module_imports_from_the_unpacked_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    modules = sorted(
        name[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for name in zipfile.ZipFile(wheel).namelist()
        if name.endswith(".py")
    )
    script = (
        "import importlib, sys\n"
        f"mods = {modules!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        "import archer_agents\n"
        "print(archer_agents.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith(str(site)), result.stdout
    for name in ("tools", "environments", "training"):
        probe = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=tmp_path, env=env, capture_output=True
        )
        assert probe.returncode != 0, f"a top-level module {name!r} is importable"
