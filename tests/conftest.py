"""Shared fixtures. Real data comes from ../shared/data (or $DDBENCH_DATA); tests that need it skip
with a clear reason only where the folder is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--data-root", default=os.environ.get("DDBENCH_DATA", str(DEFAULT_DATA)),
                     help="folder with the real data (default: ../shared/data or $DDBENCH_DATA)")


@pytest.fixture(scope="session")
def data_root(pytestconfig: pytest.Config) -> Path:
    root = Path(pytestconfig.getoption("--data-root"))
    if not (root / "MNIST").is_dir():
        pytest.skip(f"real data folder {root} is absent (set DDBENCH_DATA or --data-root)")
    return root


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session cache dir so image folders are decoded once."""
    return tmp_path_factory.mktemp("ddbench-cache")


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def run_subcommands(add_commands, argv: list[str]) -> str:
    """Parse ``argv`` with one module's sub-commands, run the handler (it must return 0), return stdout."""
    import argparse
    import io
    from contextlib import redirect_stdout

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert args.func(args) == 0
    return buf.getvalue()
