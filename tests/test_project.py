"""The project's own rules, checked like any behaviour: static analysis, layering, honest docs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(600)
def test_mypy_strict_is_clean() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_layers_point_inward() -> None:
    result = run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    test_cmd = [b.strip() for b in blocks if "pytest" in b]
    assert len(test_cmd) == 1, "the README has one test command"
    assert test_cmd[0] in (ROOT / ".ci" / "run").read_text()


def test_importing_the_package_reads_no_environment_and_touches_no_disk(tmp_path: Path) -> None:
    probe = """
import importlib, os, pkgutil, sys, traceback
reads = []
def note(key):  # only reads made by our own code count; the stdlib's sysconfig reads HOME
    caller = traceback.extract_stack()[-3]
    if "/src/switchyard/" in caller.filename:
        reads.append(key)
class Spy(type(os.environ)):
    def __getitem__(self, key):
        note(key); return super().__getitem__(key)
    def get(self, key, default=None):
        note(key); return super().get(key, default)
os.environ.__class__ = Spy
import switchyard
names = [m.name for m in pkgutil.walk_packages(switchyard.__path__, "switchyard.")
         if ".migrations" not in m.name and not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(len(names), reads)
"""
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    count, reads = result.stdout.strip().split(" ", 1)
    assert int(count) > 30
    assert reads == "[]", f"modules read the environment at import: {reads}"
    assert list(tmp_path.iterdir()) == [], "importing created files"
