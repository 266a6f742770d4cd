"""The package's layout rules (tools/check_layout.py), and that the checks can fail."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_layout", ROOT / "tools" /
                                                  "check_layout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layout"] = module
    spec.loader.exec_module(module)
    return module


layout = _checker()


def test_the_layout_holds():
    assert layout.problems() == []


def test_every_module_is_small():
    modules = layout.load_modules()
    assert len(modules) > 40
    assert max(m.lines for m in modules.values()) <= layout.MAX_LINES


def test_a_cycle_through_a_lazy_import_is_found():
    a = layout.Module("ovsnvgre.a", ROOT / "ovsnvgre/a.py", ast.parse(""), 2,
                      imports=[("ovsnvgre.b", 2, False)])
    b = layout.Module("ovsnvgre.b", ROOT / "ovsnvgre/b.py", ast.parse(""), 4,
                      imports=[("ovsnvgre.a", 4, True)])
    modules = {"ovsnvgre.a": a, "ovsnvgre.b": b}
    assert layout.find_cycles(modules) == [["ovsnvgre.a", "ovsnvgre.b"]]
    assert layout.check_nested_imports(modules) == [
        "ovsnvgre/b.py:4: imports ovsnvgre.a inside a function (put it at the top)"]


def test_the_import_graph_includes_function_level_imports(tmp_path):
    modules = layout.load_modules()
    assert "ovsnvgre.ovsdb" in {target for target, _, _ in modules["ovsnvgre.engine"].imports}
    package = tmp_path / "ovsnvgre"
    package.mkdir()
    (package / "__init__.py").write_text('"""p"""\n')
    (package / "engine.py").write_text('"""e"""\nfrom ovsnvgre import lazy\n')
    (package / "lazy.py").write_text('"""m"""\ndef f():\n    """f"""\n'
                                     '    from ovsnvgre import engine\n')
    found = layout.load_modules(tmp_path)
    assert found["ovsnvgre.lazy"].imports == [("ovsnvgre.engine", 4, True)]
    assert layout.find_cycles(found) == [["ovsnvgre.engine", "ovsnvgre.lazy"]]
    assert layout.check_nested_imports(found) == [
        "ovsnvgre/lazy.py:4: imports ovsnvgre.engine inside a function (put it at the top)"]


def test_a_table_number_outside_the_stage_list_is_refused():
    modules = layout.load_modules()
    source = '"""x"""\nACTION = "goto_table:20"\n'
    stray = layout.Module("ovsnvgre.x", ROOT / "ovsnvgre/x.py", ast.parse(source), 2, source)
    problems = layout.check_stage_order({**modules, "ovsnvgre.x": stray})
    assert problems == ["ovsnvgre/x.py:2: writes a table number (use the stage's name: "
                        "Context.goto / pipeline.table_of)"]


def test_a_stage_left_out_of_the_stage_list_is_refused():
    modules = layout.load_modules()
    source = '"""extra stage"""\nSTAGE = None\n'
    extra = layout.Module("ovsnvgre.pipeline.extra", ROOT / "ovsnvgre/pipeline/extra.py",
                          ast.parse(source), 2, source)
    problems = layout.check_stage_order({**modules, "ovsnvgre.pipeline.extra": extra})
    assert "ovsnvgre.pipeline.extra defines a STAGE that STAGES does not list" in problems


def test_relative_and_importlib_imports_are_edges_too(tmp_path):
    package = tmp_path / "ovsnvgre"
    package.mkdir()
    (package / "__init__.py").write_text('"""p"""\n')
    (package / "model.py").write_text('"""m"""\nfrom . import engine\n')
    (package / "engine.py").write_text('"""e"""\nfrom .model import Fabric\n')
    (package / "errors.py").write_text(
        '"""x"""\nimport importlib\n\n\ndef f():\n    """f"""\n'
        '    return importlib.import_module("ovsnvgre.engine")\n')
    found = layout.load_modules(tmp_path)
    assert layout.find_cycles(found) == [["ovsnvgre.engine", "ovsnvgre.model"]]
    assert "ovsnvgre.engine" in {target for target, _, _ in found["ovsnvgre.errors"].imports}


def test_a_public_method_needs_a_docstring(tmp_path):
    package = tmp_path / "ovsnvgre"
    package.mkdir()
    (package / "__init__.py").write_text('"""p"""\n')
    (package / "m.py").write_text('"""m"""\n\n\nclass A:\n    """a"""\n\n'
                                  '    def run(self):\n        return 1\n')
    assert layout.check_docstrings(layout.load_modules(tmp_path)) == [
        "ovsnvgre/m.py:7: A.run has no docstring"]
