"""The README's bad-input catalogue names the tests that show each entry: they must exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def catalogue_references():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Bad input and edge cases", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| input")]
    references = []
    for row in rows:
        test_cell = row.rstrip(" |").rsplit(" | ", 1)[-1]
        module = None
        for reference in re.findall(r"`([^`]+)`", test_cell):
            path, name = reference.split("::")
            module = path.replace("k/", "kernels/") if path else module  # "::name": the previous file
            references.append((row.split(" | ")[0].lstrip("| "), module, name))
    return rows, references


def test_every_catalogue_row_names_tests_that_exist():
    rows, references = catalogue_references()
    assert len(rows) >= 20
    assert {row for row, _, _ in references} == {row.split(" | ")[0].lstrip("| ") for row in rows}
    missing = []
    for row, module, name in references:
        source = (ROOT / "tests" / module).read_text(encoding="utf-8")
        if not re.search(rf"^def {re.escape(name)}\(", source, re.MULTILINE):
            missing.append(f"{module}::{name} ({row})")
    assert not missing, missing
