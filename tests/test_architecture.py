"""The package's shape: no import cycle anywhere, no module past its size, the layers as documented, and no
reference that leads out of the repository or to a path that does not exist."""

import ast
import os
import re
import subprocess

import grimp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "paygate")
MAX_LINES = 450  # "a module past ~400 lines is split along the domain"


def test_no_import_cycle_in_the_package():
    graph = grimp.build_graph("paygate")
    cycles = sorted(
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported != importer and graph.chain_exists(importer=imported, imported=importer)
    )
    assert cycles == []


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


@pytest.mark.parametrize("path", sorted(_modules()), ids=lambda p: os.path.relpath(p, ROOT))
def test_no_module_grows_past_what_one_person_holds(path):
    with open(path, encoding="utf-8") as f:
        assert sum(1 for _ in f) <= MAX_LINES


def test_no_module_uses_another_modules_private_name():
    crossings = []
    for path in _modules():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paygate"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        crossings.append(f"{path}: imports {node.module}.{alias.name}")
                    imported.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                crossings.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
    assert crossings == []


def test_the_architecture_document_names_every_layer_of_the_import_contract():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        layers = re.findall(r'^\s+"(paygate\.\w+)",$', f.read().split("[[tool.importlinter.contracts]]")[1], re.M)
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        document = f.read()
    assert len(layers) == 8
    assert [layer for layer in layers if f"`{layer.replace('.', '/')}/`" not in document] == []


# Documents that were never part of the repository: whoever clones it could not follow a reference to them.
# Spelled in pieces so that this file does not mention them itself.
OUTSIDE_DOCUMENTS = ("CONTRACT" + ".md", "DESIGN" + ".md", "../" + "shared", "shared/" + "reference")
# A repository path as the code, README and docs write it; a placeholder (`<lang>`, `{name}`, `*`, `%`) ends it.
REPOSITORY_PATH = re.compile(r"(?<![\w./-])((?:paygate|docs|scripts|deploy|migrations)/[\w./-]*+)(?![<{*%\w])")
# Paths the README asks the reader to create (adding a language), not paths of the repository.
MADE_BY_THE_READER = {"paygate/translations/de/LC_MESSAGES/messages.po"}


def _tracked_text_files():
    """(path, text) of every file git tracks that is text; skips the test where the tree is no git checkout."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    for path in sorted(filter(None, listing.decode("utf-8").split("\0"))):
        try:
            with open(os.path.join(ROOT, path), "rb") as f:
                data = f.read()
        except OSError:  # deleted in the working tree, not yet in the index
            continue
        if b"\0" in data:
            continue
        try:
            yield path, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def test_no_file_sends_the_reader_to_a_document_outside_the_repository():
    """Code, tests, README and docs say what they rely on in the repository's own words, or point at
    docs/architecture.md ("invariant N") or a README section."""
    mentions = [
        f"{path}:{number}: {name}"
        for path, text in _tracked_text_files()
        for number, line in enumerate(text.splitlines(), 1)
        for name in OUTSIDE_DOCUMENTS
        if name.lower() in line.lower()
    ]
    assert mentions == []


def test_every_repository_path_written_down_exists():
    """Every `paygate/...`, `docs/...`, `scripts/...`, `deploy/...` and `migrations/...` path written in a
    tracked file (code, comments, docstrings, README, docs, configuration) names a file or folder that exists.

    Paths under `tests/` are not checked: the test suite is being regrouped into folders, and its paths
    move with it; this test will take them in once they have settled.
    """
    missing = []
    for path, text in _tracked_text_files():
        for number, line in enumerate(text.splitlines(), 1):
            for match in REPOSITORY_PATH.finditer(line):
                written = match.group(1).rstrip(".")
                if written not in MADE_BY_THE_READER and not os.path.exists(os.path.join(ROOT, written)):
                    missing.append(f"{path}:{number}: {written}")
    assert missing == []
