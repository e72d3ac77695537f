"""docs/ARCHITECTURE.md's "Life of a job" table names only functions and scripts that exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def life_of_a_job_rows() -> list[list[str]]:
    text = DOC.read_text()
    section = text.split("## Life of a job", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"^\| \d+ \|", line)]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_table_is_there_and_in_order() -> None:
    rows = life_of_a_job_rows()
    assert len(rows) >= 10
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))


def test_every_function_exists_in_a_file_of_its_row() -> None:
    missing = []
    for number, _step, functions, files, scripts in life_of_a_job_rows():
        modules = []
        for path in names(files):
            assert (ROOT / path).is_file(), f"row {number}: no file {path}"
            modules.append(importlib.import_module(path.removesuffix(".py").replace("/", ".")))
        for qualname in names(functions):
            found = False
            for module in modules:
                obj: object = module
                for part in qualname.split("."):
                    obj = getattr(obj, part, None)
                found = found or obj is not None
            if not found:
                missing.append(f"row {number}: {qualname} in none of {names(files)}")
        for script in names(scripts):
            if not (ROOT / "streams" / "lua" / f"{script}.lua").is_file():
                missing.append(f"row {number}: no script streams/lua/{script}.lua")
    assert not missing, missing


def test_the_check_would_catch_a_renamed_function() -> None:
    module = importlib.import_module("consumers.runtime")
    assert getattr(module.Worker, "_read_step", None) is not None
    assert getattr(module.Worker, "_finalize", None) is None  # an old name, gone


def test_api_doc_lists_every_error_code() -> None:
    """docs/API.md names every HTTP error code the gateway sends and every job error code a
    worker or a Lua transition writes."""
    import re

    from gateway.errors import ERROR_CODES

    api = (ROOT / "docs" / "API.md").read_text()
    http = api.split("## Errors", 1)[1].split("\n## ", 1)[0]
    assert [c for c in ERROR_CODES if f"`{c}`" not in http] == []
    jobs = api.split("## Job error codes", 1)[1].split("\n## ", 1)[0]
    written: set[str] = set()
    for path in [*(ROOT / "consumers").rglob("*.py"), *(ROOT / "streams" / "lua").glob("*.lua")]:
        text = path.read_text()
        written |= set(re.findall(r"""code\s*=\s*["']([a-z_]+)["']""", text))
    written -= {"job_failed"}  # FailJob's default, never raised without a code
    assert sorted(c for c in written if f"`{c}`" not in jobs) == []
