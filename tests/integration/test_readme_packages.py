"""The README's package table matches the tree: every module and sub-package of ``runtime/``
and ``builder/`` is named in its package's row, and every package the table names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SKIPPED = {"__init__", "__main__"}


def _rows() -> dict[str, str]:
    """Each package the table lists (``runtime/store/``) and its description."""
    text = (ROOT / "README.md").read_text()
    start = text.index("| package | what |")
    end = text.find("\n\n", start)
    rows: dict[str, str] = {}
    for line in text[start:end].splitlines()[2:]:
        _, package, what, *_ = line.split("|")
        for name in re.findall(r"`([^`]+/)`", package):
            rows[name] = what
    return rows


def _packages() -> list[Path]:
    return sorted(
        init.parent.relative_to(ROOT)
        for top in ("runtime", "builder")
        for init in (ROOT / top).rglob("__init__.py")
    )


def test_every_listed_package_exists() -> None:
    for name in _rows():
        assert (ROOT / name).is_dir(), f"the README lists {name}, which the tree lacks"


def _row_of(rows: dict[str, str], package: Path) -> tuple[str, str]:
    """The package's own row, or its nearest ancestor's (a small sub-package such as
    ``rows/`` is described inside its parent's row)."""
    for candidate in (package, *package.parents):
        key = f"{candidate}/"
        if key in rows:
            return key, rows[key]
    raise AssertionError(f"the README's package table has no row for {package}/")


def test_every_module_and_sub_package_is_named_in_its_row() -> None:
    rows = _rows()
    for package in _packages():
        key, what = _row_of(rows, package)
        named = {name.removesuffix("/") for name in re.findall(r"`([^`]+)`", what)}
        modules = {m.stem for m in (ROOT / package).glob("*.py")} - _SKIPPED
        subpackages = {
            d.name for d in (ROOT / package).iterdir() if (d / "__init__.py").is_file()
        }
        # a sub-package with a row of its own is described there
        unnamed = sorted(
            name
            for name in modules | subpackages
            if name not in named and f"{package}/{name}/" not in rows
        )
        assert not unnamed, f"the README's row for {key} does not name {package}/{unnamed}"
