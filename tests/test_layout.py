"""The package layout holds: no import cycle, data_gen stands alone, rooms by flow, small modules.

These read the source (ast), import nothing of the package, and so run in a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("rolellm_jax", "data_gen")
# What may stand at the top of a package beside its rooms: the CLIs, errors, the schema and files modules.
TOP_LEVEL = {
    "rolellm_jax": {"__init__", "errors", "train", "convert", "evaluate", "aot", "serve", "chat"},
    "data_gen": {"__init__", "__main__", "errors", "rolebench", "files"},
}
MAX_LINES = 400


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def top_level_imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports when it is imported (function bodies excluded)."""
    is_package = path.name == "__init__.py"
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        nodes = [node]
        if isinstance(node, (ast.If, ast.Try)):  # `if TYPE_CHECKING:` bodies never run; try bodies do
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            nodes = list(ast.walk(node))
        for n in nodes:
            if isinstance(n, ast.Import):
                found.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                if n.level:  # relative import
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (n.level - 1)]
                    mod = ".".join(base + ([n.module] if n.module else []))
                else:
                    mod = n.module or ""
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in n.names)  # `from pkg import submodule`
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: top_level_imports(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_the_package_modules():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_data_gen_imports_no_jax_flax_or_rolellm_jax():
    banned = ("jax", "jaxlib", "flax", "optax", "orbax", "rolellm_jax")
    for path in sorted((REPO / "data_gen").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.relative_to(REPO)}:{node.lineno} imports {name}"


def test_only_clis_errors_schema_and_files_stand_at_the_top_of_a_package():
    for package, allowed in TOP_LEVEL.items():
        top = {p.stem for p in (REPO / package).glob("*.py")}
        assert top <= allowed, f"{package}/: {sorted(top - allowed)} belong in a room (a subpackage)"


def test_no_module_is_longer_than_a_few_screens():
    long = {
        str(p.relative_to(REPO)): n
        for p in module_files().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
