"""The package's shape: no import cycle anywhere, no module past its size, the layers as documented."""
import ast
import os
import re

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
        tree = ast.parse(open(path, encoding="utf-8").read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paygate"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        crossings.append(f"{path}: imports {node.module}.{alias.name}")
                    imported.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                crossings.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
    assert crossings == []


def test_the_architecture_document_names_every_layer_of_the_import_contract():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        layers = re.findall(r'^\s+"(paygate\.\w+)",$', f.read().split("[[tool.importlinter.contracts]]")[1], re.M)
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        document = f.read()
    assert len(layers) == 8
    assert [layer for layer in layers if f"`{layer.replace('.', '/')}/`" not in document] == []
