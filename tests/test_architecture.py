"""The architecture, kept true: ``shared``'s packages import only downwards, and nothing imports in a circle.

The layers, lowest first (docs/architecture.md draws them): ``shared.core`` <- ``shared.faces`` <-
``shared.recognition`` <- ``shared.training`` and ``shared.video`` (side by side: neither imports
the other) <- ``shared.library`` <- ``shared.web`` <- the three servers. Every import counts, function-local ones too,
since a cycle hidden in a function is still a cycle. Read from the source with ``ast``; nothing is
imported or run.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Each package and the packages it may import (besides itself).
MAY_IMPORT = {
    "shared.core": set(),
    "shared.faces": {"shared.core"},
    "shared.recognition": {"shared.core", "shared.faces"},
    "shared.training": {"shared.core", "shared.faces", "shared.recognition"},
    "shared.video": {"shared.core", "shared.faces", "shared.recognition"},
    "shared.library": {"shared.core", "shared.faces", "shared.recognition", "shared.training", "shared.video"},
    "shared.web": {"shared.core", "shared.faces", "shared.recognition", "shared.training", "shared.video",
                   "shared.library"},
}
SERVERS = ("main_server", "process_server", "video_server")


def module_name(path):
    """``shared/faces/engine.py`` -> ``shared.faces.engine`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path):
    """The ``shared``/server modules that the file at ``path`` imports, anywhere in it: ``{module: line}``.

    ``from shared.faces import engine`` counts as ``shared.faces.engine`` when that is a module,
    else as ``shared.faces``; relative imports are resolved against the file's package.
    """
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("shared",) + SERVERS:
                found.setdefault(name, node.lineno)
    return found


def _is_module(name):
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(module):
    """The package of ``MAY_IMPORT`` that ``module`` belongs to (``None``: ``shared`` itself or a server)."""
    for package in MAY_IMPORT:
        if module == package or module.startswith(package + "."):
            return package
    return None


def sources():
    for top in ("shared",) + SERVERS:
        yield from sorted((ROOT / top).rglob("*.py"))


def test_every_module_of_shared_is_in_a_layer():
    loose = [module_name(p) for p in (ROOT / "shared").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules of shared/ outside its packages: {loose}"


def test_imports_only_go_down_the_layers():
    wrong = []
    for path in sources():
        here = module_name(path)
        mine = layer(here)
        for name, line in imports(path).items():
            theirs = layer(name)
            if here.split(".")[0] in SERVERS:  # servers import shared, never each other
                if name.split(".")[0] in SERVERS and name.split(".")[0] != here.split(".")[0]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} (another server)")
                continue
            if theirs is None or (mine is not None and theirs != mine and theirs not in MAY_IMPORT[mine]):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {name} ({theirs or 'not shared'})")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_one_database_layer_opens_every_database():
    """Accounts and the library reach their databases through ``shared.core.db`` (issue 24: one SQLAlchemy
    layer, so another database's URL can replace SQLite): no other module makes an engine or a connection."""
    opened = []
    for path in sources():
        if path == ROOT / "shared" / "core" / "db.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("create_engine", "connect") \
                    and isinstance(node.value, ast.Name) and node.value.id in ("sqlite3", "sqlalchemy", "sa"):
                opened.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    assert opened == []


def test_no_module_imports_in_a_circle():
    graph = {}
    for path in sources():
        here = module_name(path)
        graph[here] = {name for name in imports(path) if name != here and _is_module(name)}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("path", [p for p in sorted((ROOT / "shared").rglob("*.py"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_says_its_one_job(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split()) >= 5, f"{path.relative_to(ROOT)} has no docstring saying what it is for"
