"""Every flag `python -m a2f_triton.serve` and `python -m gateway` accept is in the README's
Configuration table: read from their own --help, so a new flag without a row fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLAG = re.compile(r"--[a-z][a-z0-9_-]*")


def configuration_flags() -> set[str]:
    """The flags named in the first column of the README's Configuration table."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return {
        flag
        for line in section.splitlines()
        if line.startswith("| `--")
        for flag in FLAG.findall(line.split("|")[1])
    }


def accepted_flags(module: str) -> list[list[str]]:
    """Each option of `module`'s --help as its spellings (`--help` itself left out)."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True, text=True, timeout=60, check=True, cwd=PROJECT_ROOT,
    )  # fmt: skip
    options = []
    for line in done.stdout.splitlines():
        if line.startswith("  -"):  # an option's line: spellings, then (after 2 spaces) help
            spellings = FLAG.findall(re.split(r"\s{2,}", line.strip(), maxsplit=1)[0])
            if spellings and spellings != ["--help"]:
                options.append(spellings)
    assert options, done.stdout
    return options


@pytest.mark.parametrize("module", ["a2f_triton.serve", "gateway"])
def test_every_flag_is_in_the_configuration_table(module: str) -> None:
    documented = configuration_flags()
    missing = [
        spellings[0]
        for spellings in accepted_flags(module)
        if not documented.intersection(spellings)
    ]
    assert not missing, f"README's Configuration table lacks python -m {module} {missing}"
