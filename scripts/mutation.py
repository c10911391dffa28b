"""Mutation testing (mutmut 3) of the core modules, on a tree laid out as the package installs.

mutmut finds a mutated function by the module name it derives from the file's
path, but this repository maps ``training/``, ``environments/`` and ``tools/``
into ``archer_agents.*`` (setuptools ``package-dir``): run in place, the
mutated ``training/losses.py`` would be ``training.losses`` to mutmut and
``archer_agents.training.losses`` to the tests, and no mutant would ever be
hit. So this script copies the package into ``.make/mutation`` the way it
installs (``archer_agents/training/...``), with ``tests/`` and
``pyproject.toml`` (whose ``[tool.mutmut]`` table names the mutated files and
the test files that judge them), and runs ``mutmut run`` there, limited to
the functions in `TARGETS`. It then prints, per module, the mutants killed,
survived and otherwise, and the mutation score, and lists the survivors
(``--markdown FILE`` writes the same as a Markdown report).

    python scripts/mutation.py                  # everything in TARGETS (long: hours on 2 cores)
    python scripts/mutation.py --only losses    # one module
    python scripts/mutation.py --report-only    # re-read results of an earlier run

Results are kept in ``.make/mutation/mutants`` between runs. mutmut reruns
every mutant it is given by name, so a rerun gives it only the mutants with no
result yet (an interrupted run resumes where it stopped); ``--all`` tests every
mutant again (after the mutated code or its tests changed), and ``--mutant NAME``
tests named ones (a survivor, once a test for it is written).
``make mutation`` runs it.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".make" / "mutation"
MAPPED = ("training", "environments", "tools")
"""Top-level folders that install as subpackages of archer_agents."""

TARGETS: dict[str, list[str]] = {
    # short name -> mutant-name globs (mutmut names methods module.xǁClassǁmethod__mutmut_N
    # and functions module.x_function__mutmut_N)
    "losses": ["archer_agents.training.losses.*"],
    "archer": ["archer_agents.training.algorithms.archer.*"],
    "batching": [
        "archer_agents.serving.model_engine.xǁBatcherǁ*",
        "archer_agents.serving.model_engine.x__groups__*",
    ],
    "checkpoint": ["archer_agents.training.checkpoint.*"],
}
"""What is mutated: the losses, the ArCHer algorithm, the local server's batching (only
`Batcher` and `_groups` of model_engine.py, not the model code around them) and checkpoints."""

EXIT_CODES = {
    1: "killed",
    3: "killed",
    0: "survived",
    2: "interrupted",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    37: "caught by type check",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
    None: "not checked",
}
"""mutmut's exit-code convention (``status_by_exit_code`` in mutmut/stats.py)."""


def layout() -> None:
    """Copy the package as it installs, plus tests/ and pyproject.toml, into `WORK`.

    The earlier run's ``mutants/`` folder (results and stats) is kept.
    """
    WORK.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("archer_agents", "tests"):
        shutil.rmtree(WORK / name, ignore_errors=True)
    shutil.copytree(ROOT / "archer_agents", WORK / "archer_agents", ignore=ignore)
    for folder in MAPPED:
        shutil.copytree(ROOT / folder, WORK / "archer_agents" / folder, ignore=ignore)
    shutil.copytree(ROOT / "tests", WORK / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", WORK / "pyproject.toml")


def run_mutmut(globs: list[str], max_children: int) -> int:
    """``mutmut run GLOBS`` in `WORK`; returns its exit code."""
    mutmut = Path(sys.executable).with_name("mutmut")
    command = [str(mutmut), "run", "--max-children", str(max_children), *globs]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    print("$", " ".join(command), f"(in {WORK})", flush=True)
    return subprocess.call(command, cwd=WORK, env=env)


def results(globs_by_module: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """module short name -> {mutant name: status}, read from mutmut's ``.meta`` files."""
    found: dict[str, dict[str, str]] = {name: {} for name in globs_by_module}
    for meta in (WORK / "mutants").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        for mutant, code in data.get("exit_code_by_key", {}).items():
            for name, globs in globs_by_module.items():
                if any(fnmatch.fnmatch(mutant, pattern) for pattern in globs):
                    found[name][mutant] = EXIT_CODES.get(code, f"exit code {code}")
    return found


def to_test(globs_by_module: dict[str, list[str]], *, everything: bool) -> list[str]:
    """What to give mutmut: the globs on a first run (or ``everything``), else the names of
    the mutants with no result yet."""
    found = results(globs_by_module)
    if everything or not any(found.values()):
        return [g for globs in globs_by_module.values() for g in globs]
    return sorted(
        mutant
        for statuses in found.values()
        for mutant, status in statuses.items()
        if status == "not checked"
    )


def mutant_changes(mutants: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Per mutant, the lines it changed: (original, mutated) pairs, read from the mutated
    sources mutmut writes (``x_f__mutmut_orig`` beside ``x_f__mutmut_N``)."""
    by_file: dict[Path, list[str]] = {}
    for mutant in mutants:
        module = mutant.rsplit(".", 1)[0]
        by_file.setdefault(WORK / "mutants" / (module.replace(".", "/") + ".py"), []).append(mutant)
    changes: dict[str, list[tuple[str, str]]] = {}
    for path, names in by_file.items():
        if not path.is_file():
            continue
        source = path.read_text()
        lines = source.splitlines()
        functions = {
            node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for mutant in names:
            function = mutant.rsplit(".", 1)[1]
            original = functions.get(function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
            mutated = functions.get(function)
            if original is None or mutated is None:
                continue
            a = original.splitlines()[1:]  # the def lines differ by name only
            b = mutated.splitlines()[1:]
            changes[mutant] = [
                (x.strip(), y.strip()) for x, y in zip(a, b, strict=False) if x != y
            ] or [("(lines removed or added)", "")]
    return changes


_DEFAULT = re.compile(r"^\w+: [^=]+ = [^=]+,$")
_LITERAL = re.compile(r"""(["'])(?:\\.|(?!\1).)*\1""")


def kind_of(change: list[tuple[str, str]]) -> str:
    """A survivor's kind, for reading them in groups: a message or log text, a timing or
    other metric value, or a change of logic."""
    for before, after in change:
        if before.startswith(("logger.", "log.")) or "logger." in before:
            continue
        if _LITERAL.sub('""', before) == _LITERAL.sub('""', after.replace("None", '""')):
            continue  # only a string literal changed, or became None (messages, names)
        if before.startswith("raise ") or "time/" in before or "perf_counter" in before:
            continue
        if _DEFAULT.match(before) and _DEFAULT.match(after):
            return "default argument"
        return "logic"
    lines = " ".join(before for before, _ in change)
    if "logger." in lines:
        return "log message"
    if "time/" in lines or "perf_counter" in lines:
        return "timing metric"
    return "message or name text"


def report(found: dict[str, dict[str, str]]) -> str:
    """The per-module table and the survivors, as Markdown."""
    lines = [
        "| module | mutants | killed | survived | timeout | other | score |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    survivors: list[str] = []
    for name, statuses in found.items():
        counts = Counter(statuses.values())
        killed = counts["killed"] + counts["timeout"]
        decided = killed + counts["survived"]
        other = len(statuses) - decided
        score = f"{100 * killed / decided:.1f}%" if decided else "n/a"
        lines.append(
            f"| {name} | {len(statuses)} | {counts['killed']} | {counts['survived']} | "
            f"{counts['timeout']} | {other} | {score} |"
        )
        survivors += [m for m, status in sorted(statuses.items()) if status == "survived"]
    changes = mutant_changes(survivors)
    kinds = {m: kind_of(changes[m]) if m in changes else "unread" for m in survivors}
    lines += ["", f"Surviving mutants ({len(survivors)}), by kind:", ""]
    for kind, count in sorted(Counter(kinds.values()).items()):
        lines.append(f"- {kind}: {count}")
    for kind in sorted(set(kinds.values())):
        lines += ["", f"### {kind}", ""]
        for m in (m for m in survivors if kinds[m] == kind):
            shown = "; ".join(f"`{a}` -> `{b}`" for a, b in changes.get(m, [])[:2])
            lines.append(f"- `{m.rsplit('.', 1)[1]}`: {shown}" if shown else f"- `{m}`")
    if not survivors:
        lines.append("- none")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="module(s)")
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutant runs")
    parser.add_argument("--report-only", action="store_true", help="read an earlier run's results")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--all", action="store_true", help="test every mutant again")
    parser.add_argument("--mutant", action="append", default=[], help="test this mutant (again)")
    args = parser.parse_args(argv)
    chosen = {name: TARGETS[name] for name in (args.only or TARGETS)}
    code = 0
    if not args.report_only:
        names = args.mutant or to_test(chosen, everything=args.all)
        if not names:
            print("every mutant has a result; --all tests them again", flush=True)
        else:
            layout()
            code = run_mutmut(names, args.max_children)
    text = report(results(chosen))
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
