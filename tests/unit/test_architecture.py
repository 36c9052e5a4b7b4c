"""The boundaries in pyproject.toml's import-linter contracts hold, and would catch a breach."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the `app` package under `project`, with the contracts there.

    `-S` keeps the editable install's import hook out, so `app` is the copy under `project`.
    """
    paths = [str(project), *site.getsitepackages()]
    return subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys; from importlinter.cli import lint_imports_command as c;"
            " sys.exit(c(['--no-cache', '--no-logo']))",
        ],
        cwd=project,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("domain/state.py", "import sqlalchemy", "The domain is pure"),
        ("domain/flags.py", "import app.events.store", "Layers"),
        ("events/store.py", "import app.api.deps", "Layers"),
        ("projections/deals.py", "import app.service.deals", "Layers"),
        ("service/ingest.py", "import app.service.deals", "No import cycles"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "app" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith(" BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
