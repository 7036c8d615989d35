"""The code's shape, which a new maintainer relies on: modules short enough to read in one
sitting, no reach into Ray's private modules (an upgrade may move them without a word),
and docs that say what the code does now, with nothing that points outside the repository."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
SOURCES = [*ROOT.glob("segray/**/*.py"), *ROOT.glob("jobs/*.py"), *ROOT.glob("bench/*.py")]
# History belongs in git log: issue numbers, "before issue", notes on how a figure was hard
# to get, and the files beside the repository that a user does not have.
HISTORY = re.compile(r"before issue|issue #\d|\(#\d+[),]|why was not found|was lent|ran out of time|FIELD-NOTES"
                     r"|\.\./shared", re.IGNORECASE)


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_no_module_of_segray_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.glob("segray/**/*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_nothing_imports_a_private_ray_module():
    private = {f"{path.relative_to(ROOT)}: {name}" for path in SOURCES for name in imported_modules(path)
               if name.startswith("ray") and any(part.startswith("_") for part in name.split("."))}
    assert private == set()


def test_code_and_docs_carry_no_history_and_no_path_outside_the_repository():
    texts = [*SOURCES, ROOT / "README.md", *ROOT.glob("docs/*.md")]
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in texts
             for number, line in enumerate(path.read_text().splitlines(), 1) if HISTORY.search(line)]
    assert found == []
