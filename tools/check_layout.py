"""Check the package's layout: what README.md promises about ovsnvgre/ holds.

    python3 tools/check_layout.py        # prints each module's size; exit 1 on a problem

- no module over MAX_LINES lines;
- no import cycle between the package's modules, function-level imports included;
- the package's own imports at the top of each file, never inside a function;
- the pipeline's stage order written once: ``STAGES`` in ovsnvgre/pipeline/__init__.py
  holds every stage module's STAGE, and no other code writes a table number into
  a ``goto_table`` action or a ``table=`` match;
- every module listed, with its one job, in the README's "Layout" section;
- a docstring on every public module, class and function of the package.

tests/test_layout.py runs the same checks, so CI keeps them.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ovsnvgre"
MAX_LINES = 400
# The one module that turns a stage name into a goto_table action.
STAGE_PLUMBING = {"ovsnvgre/pipeline/stage.py"}


@dataclass
class Module:
    name: str           # ovsnvgre.pipeline.flow
    path: Path
    tree: ast.Module
    lines: int
    text: str = ""
    imports: list[tuple[str, int, bool]] = field(default_factory=list)  # (module, line, nested)


def _name_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load_modules(root: Path = ROOT) -> dict[str, Module]:  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
    """Every module of the package under ``root``, parsed, with the package's own imports
    resolved."""
    modules: dict[str, Module] = {}
    for path in sorted((root / "ovsnvgre").rglob("*.py")):
        text = path.read_text()
        name = _name_of(path, root)
        modules[name] = Module(name, path, ast.parse(text), len(text.splitlines()), text)
    for module in modules.values():
        nested = _nested_nodes(module.tree)
        for node in ast.walk(module.tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    targets.append(candidate if candidate in modules else base)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                # importlib.import_module("ovsnvgre.x") or a lazy registry's
                # "ovsnvgre.x:attribute": an edge all the same.
                found = LAZY_TARGET.match(node.value)
                if found and found.group(1) in modules:
                    targets = [found.group(1)]
            for target in targets:
                if target == "ovsnvgre" or target.startswith("ovsnvgre."):
                    lazy = id(node) in nested and not isinstance(node, ast.Constant)
                    module.imports.append((target, node.lineno, lazy))
    return modules


LAZY_TARGET = re.compile(r"^(ovsnvgre(?:\.\w+)*)(?::\w+)?$")


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (``from . import x`` included)."""
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def _nested_nodes(tree: ast.Module) -> set[int]:
    """The ids of the import statements inside a function or class body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for child in ast.walk(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    inside.add(id(child))
    return inside


def _rel(module: Module) -> str:
    """The module's path from the repository root, as messages show it."""
    tail = "/__init__.py" if module.path.name == "__init__.py" else ".py"
    return module.name.replace(".", "/") + tail


def check_sizes(modules: dict[str, Module]) -> list[str]:
    return [f"{_rel(m)}: {m.lines} lines (at most {MAX_LINES})"
            for m in modules.values() if m.lines > MAX_LINES]


def check_nested_imports(modules: dict[str, Module]) -> list[str]:
    return [f"{_rel(m)}:{line}: imports {target} inside a function (put it at the top)"
            for m in modules.values() for target, line, nested in m.imports if nested]


def find_cycles(modules: dict[str, Module]) -> list[list[str]]:  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
    """Each strongly connected group of two or more modules (or a module importing itself)."""
    graph = {name: sorted({t for t, _, _ in m.imports if t in modules and t != name}
                          | ({name} if any(t == name for t, _, _ in m.imports) else set()))
             for name, m in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for name in sorted(graph):
        if name not in index:
            visit(name)
    return groups


def check_cycles(modules: dict[str, Module]) -> list[str]:
    return [f"import cycle: {' <-> '.join(group)}" for group in find_cycles(modules)]


GOTO_LITERAL = re.compile(r"goto_table:(\d|\{)|resubmit\(,\d|\btable=\d")


def check_stage_order(modules: dict[str, Module]) -> list[str]:  # noqa: C901 - one decision per branch, each documented; splitting would scatter it
    problems = []
    init = modules.get("ovsnvgre.pipeline")
    if init is None:
        return ["ovsnvgre/pipeline/__init__.py is missing"]
    stage_modules = {name for name, m in modules.items()
                     if name.startswith("ovsnvgre.pipeline.") and any(
                         isinstance(node, ast.Assign) and any(
                             isinstance(t, ast.Name) and t.id == "STAGE" for t in node.targets)
                         for node in m.tree.body)}
    listed = set()
    definitions = 0
    for node in init.tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "STAGES":
            definitions += 1
            for element in ast.walk(node):
                if isinstance(element, ast.Attribute) and element.attr == "STAGE" \
                        and isinstance(element.value, ast.Name):
                    listed.add(f"ovsnvgre.pipeline.{element.value.id}")
    if definitions != 1:
        problems.append(f"ovsnvgre/pipeline/__init__.py: STAGES is assigned {definitions} "
                        "times (once, as the one stage order)")
    for missing in sorted(stage_modules - listed):
        problems.append(f"{missing} defines a STAGE that STAGES does not list")
    for name, m in modules.items():
        if name != "ovsnvgre.pipeline" and any(
                isinstance(node, ast.Assign | ast.AnnAssign) and any(
                    isinstance(t, ast.Name) and t.id == "STAGES"
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
                for node in m.tree.body):
            problems.append(f"{_rel(m)}: defines STAGES again (only pipeline/__init__.py may)")
        if _rel(m) in STAGE_PLUMBING:
            continue
        for number, line in enumerate(m.text.splitlines(), 1):
            if GOTO_LITERAL.search(line):
                problems.append(f"{_rel(m)}:{number}: writes a table number "
                                "(use the stage's name: Context.goto / pipeline.table_of)")
    return problems


def check_readme(modules: dict[str, Module]) -> list[str]:
    text = (ROOT / "README.md").read_text()
    layout = text.split("## Layout", 1)[1] if "## Layout" in text else ""
    layout = layout.split("\n## ", 1)[0]
    problems = []
    for m in modules.values():
        relative = m.path.relative_to(PACKAGE)
        shown = f"{relative.parent}/" if relative.name == "__init__.py" else relative.name
        if relative.name == "__init__.py" and str(relative.parent) == ".":
            continue
        if not re.search(rf"(^|[\s,/(]){re.escape(shown.rstrip('/'))}(/|\.py|\b)", layout):
            problems.append(f"README.md, Layout: {_rel(m)} is not listed with its job")
    return problems


def check_docstrings(modules: dict[str, Module]) -> list[str]:
    problems = []
    for m in modules.values():
        if not ast.get_docstring(m.tree):
            problems.append(f"{_rel(m)}: no module docstring")
        for node in m.tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_") \
                    and not ast.get_docstring(node):
                problems.append(f"{_rel(m)}:{node.lineno}: {node.name} has no docstring")
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for method in node.body:
                    if isinstance(method, ast.FunctionDef) and not method.name.startswith("_") \
                            and method.name not in UNDOCUMENTED_METHODS \
                            and not ast.get_docstring(method):
                        problems.append(f"{_rel(m)}:{method.lineno}: {node.name}.{method.name} "
                                        "has no docstring")
    return problems


# Methods whose meaning one interface documents once (changes.py: every change says
# what it is in one line; Click's and ovsdbapp's hooks are theirs).
UNDOCUMENTED_METHODS = {"describe", "convert", "run_idl", "post_commit"}


CHECKS = (check_sizes, check_nested_imports, check_cycles, check_stage_order, check_readme,
          check_docstrings)


def problems() -> list[str]:
    """Every problem found, one line each (empty: the layout holds)."""
    modules = load_modules()
    return [problem for check in CHECKS for problem in check(modules)]


def main() -> int:
    modules = load_modules()
    for m in sorted(modules.values(), key=lambda m: -m.lines):
        print(f"{m.lines:5d}  {_rel(m)}")
    found = problems()
    for problem in found:
        print(f"problem: {problem}")
    print(f"{len(modules)} modules, largest {max(m.lines for m in modules.values())} lines; "
          f"{'ok' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
