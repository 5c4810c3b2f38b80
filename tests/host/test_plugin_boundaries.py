"""Plugins use the host through host_app.api (docs/internals.md) and each other only through ``depends``."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from host_app import api
from tests.support import ROOT

INTERNALS = (ROOT / "docs" / "internals.md").read_text()
HOST_SURFACE = {"host_app", "host_app.api", "host_app.hookspecs"}
# What `from host_app import X` may name: the package's own exports, and the two modules above.
HOST_PACKAGE_NAMES = {"hookimpl", "create_app", "api", "hookspecs"}


def _plugin_files() -> list[Path]:
    files = sorted((ROOT / "plugins").rglob("*.py")) + sorted((ROOT / "examples").rglob("*.py"))
    assert len(files) > 40, "the plugins were not found"
    return files


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in the file, those inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def _may_use_host_module(path: Path, module: str) -> bool:
    relative = path.relative_to(ROOT)
    if module == "host_app.migrating":
        return relative.parts[-2:] == ("migrations", "env.py")
    if module == "host_app.testing":
        return "tests" in relative.parts or "testing" in relative.parts or path.stem == "testing"
    return module in HOST_SURFACE


def test_plugins_import_the_host_only_through_its_api():
    wrong = []
    for path in _plugin_files():
        for line, module, names in _imports(path):
            if not (module == "host_app" or module.startswith("host_app.")):
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if not _may_use_host_module(path, module):
                wrong.append(f"{where} imports {module}")
            elif module == "host_app" and set(names) - HOST_PACKAGE_NAMES:
                wrong.append(f"{where} imports {sorted(set(names) - HOST_PACKAGE_NAMES)} from host_app")
    assert wrong == [], "plugins may import host_app, host_app.api and host_app.hookspecs only:\n" + "\n".join(wrong)


def _manifest_depends(plugin_dir: Path) -> set[str]:
    namespace: dict = {}
    exec((plugin_dir / "__manifest__.py").read_text(), namespace)
    return set(namespace["MANIFEST"]["depends"])


def test_a_plugin_imports_another_only_when_it_depends_on_it():
    wrong = []
    plugin_dirs = [p for p in (ROOT / "plugins").iterdir() if (p / "__manifest__.py").exists()]
    assert {p.name for p in plugin_dirs} >= {"mail", "imap_inbox", "contacts_import", "reply_condition"}
    for plugin_dir in plugin_dirs:
        allowed = _manifest_depends(plugin_dir) | {plugin_dir.name}
        for path in sorted(plugin_dir.rglob("*.py")):
            for line, module, _ in _imports(path):
                parts = module.split(".")
                if parts[0] == "plugins" and len(parts) > 1 and parts[1] not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert wrong == [], "imports of plugins not named in depends:\n" + "\n".join(wrong)


def test_the_mail_readers_do_not_know_the_imap_transport():
    for name in ("contacts_import", "reply_condition"):
        assert "imap_inbox" not in _manifest_depends(ROOT / "plugins" / name)


def _documented_names() -> set[str]:
    return {re.sub(r"\(.*", "", cell) for cell in re.findall(r"^\| `([^`]+)` \|", INTERNALS, re.M)}


def test_docs_internals_lists_exactly_what_host_app_api_offers():
    offered = set(api.__all__)
    assert all(hasattr(api, name) for name in offered)
    documented = _documented_names()
    assert offered - documented == set(), "in host_app.api but not in docs/internals.md"
    assert documented - offered == set(), "in docs/internals.md but not in host_app.api"


def _package_modules() -> dict[str, Path]:
    """``plugins.x.y`` -> its file, for the product code of every plugin (not its tests or harnesses)."""
    modules = {}
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if "testing" in relative.parts or path.stem == "testing" or "migrations" in relative.parts:
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolved(module_name: str, path: Path, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        package = module_name.split(".") if path.stem == "__init__" else module_name.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def test_plugin_code_imports_at_the_top_of_its_modules():
    """Imports inside functions hide circles between modules; the layers make them needless."""
    lazy = []
    for path in _package_modules().values():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        lazy += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                 if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top]
    assert lazy == [], "imports inside functions:\n" + "\n".join(lazy)


def test_the_plugins_import_graph_has_no_circle():
    modules = _package_modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                targets = _resolved(name, path, node)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {target for target in targets if target in modules and target != name}
    assert sum(map(len, graph.values())) > 50, "the import graph was not read"
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return chain + [name, target]
            if target not in state and (found := visit(target, chain + [name])):
                return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            circle = visit(name, [])
            assert circle is None, "import circle: " + " -> ".join(circle[circle.index(circle[-1]):])
