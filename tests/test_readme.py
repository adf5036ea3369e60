"""The README's promises that a test can check: the bad-input catalogue names tests that exist,
and every local file it links is in the repository."""

import re
import subprocess
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


# ---------------------------------------------------------------------------------
# Local links: a fresh clone must have every file the README points to.

# [text](target) and ![alt](target); the target stops at whitespace or ")" (a title
# after a space is allowed by Markdown and ignored here).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def local_link_targets(text):
    """The repository paths of the Markdown links and images in ``text`` that are not
    URLs or in-page anchors, with any ``#anchor`` or ``?query`` removed."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http:, https:, mailto: ...; or an anchor in the README itself
        path = re.split(r"[#?]", target, maxsplit=1)[0]
        if path:
            targets.append(path)
    return targets


def test_link_targets_are_found_in_links_and_images():
    text = (
        "see [`docs/a.md`](docs/a.md) and ![plot](docs/results/full.png), "
        "[site](https://example.org/x.md), [here](#results), [part](docs/b.md#section), "
        '[titled](docs/c.md "a title")'
    )
    assert local_link_targets(text) == ["docs/a.md", "docs/results/full.png", "docs/b.md", "docs/c.md"]


def _tracked_by_git(paths):
    """The subset of ``paths`` git tracks (index included), or None outside a git checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", *paths], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if listed.returncode != 0:
        return None  # not a git checkout (an sdist, an exported tree): existence is all we can check
    return set(filter(None, listed.stdout.split("\0")))


def test_every_local_file_the_readme_links_is_in_the_repository():
    targets = local_link_targets((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/results/full.png" in targets  # the README's picture: the parser found it
    missing = [path for path in targets if not (ROOT / path).is_file()]
    assert not missing, f"README links files that do not exist: {missing}"
    tracked = _tracked_by_git(targets)
    if tracked is not None:
        untracked = sorted(set(targets) - tracked)
        assert not untracked, f"README links files git does not track (a fresh clone lacks them): {untracked}"
