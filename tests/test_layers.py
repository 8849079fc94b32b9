"""The package's layers: lower subpackages never import upper ones, and only cli/ imports the local services.

Every import counts, also the ones inside functions (they are real dependencies, only deferred). The checker is
run on the package, and on a small tree with planted violations so that it is known to catch them.
"""

import ast
from pathlib import Path

import pimc_ray

PACKAGE = Path(pimc_ray.__file__).parent

#: The modules at the package's root: errors and exit codes, progress lines, the Ray Data stage pattern, each
#: process's scratch folder, and storage over URIs (models read checkpoints and data reads labels and snapshots
#: through it, as io/ writes outputs).
BASE = {"errors", "progress", "parallel", "scratch", "storage", "_exports", "__init__"}

#: What each subpackage may import besides itself and the base modules (kernels and models know arrays and
#: tensors, not catalogs; data knows no model; io knows rasters, not models; runs, the top library layer, knows
#: them all; only cli imports local and runs).
ALLOWED = {
    "kernels": set(),
    "data": {"kernels"},
    "models": {"kernels"},
    "io": {"data", "kernels"},
    "training": {"data", "kernels", "models", "io"},
    "mapping": {"data", "kernels", "models", "io"},
    "local": {"data", "kernels", "io"},
    "runs": {"data", "kernels", "models", "io", "training", "mapping"},
    "evaluation": {"data", "kernels", "models"},
    "cli": {"data", "kernels", "models", "io", "training", "mapping", "local", "runs", "evaluation"},
}


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``pimc_ray`` import in a module, anywhere in it."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pimc_ray":
            if node.module == "pimc_ray":  # ``from pimc_ray import errors``: the names are the modules
                out += [(node.lineno, f"pimc_ray.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "pimc_ray"]
    return out


def _layer(parts: tuple[str, ...]) -> str:
    """The layer of a module path inside the package: its subpackage, or the root module's name."""
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def violations(root: Path) -> list[str]:
    """Imports under ``root`` (a ``pimc_ray`` package folder) that break the layering."""
    subpackages = set(ALLOWED)
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        here = _layer(rel)
        for line, module in _imported(ast.parse(path.read_text())):
            target = module.split(".")[1] if "." in module else "__init__"
            if target not in subpackages:
                if target not in BASE and here in subpackages:
                    continue  # a name imported from the package root (``from pimc_ray import __version__``)
                if here in BASE and target not in BASE:
                    found.append(f"{'/'.join(rel)}:{line}: base module imports {module}")
                continue
            if here in BASE:
                found.append(f"{'/'.join(rel)}:{line}: base module imports {module}")
            elif target != here and target not in ALLOWED[here]:
                found.append(f"{'/'.join(rel)}:{line}: {here}/ imports {module}")
    return found


def test_no_layer_imports_one_above_it():
    assert violations(PACKAGE) == []


def test_the_checker_catches_upward_imports(tmp_path):
    root = tmp_path / "pimc_ray"
    for sub in ALLOWED:
        (root / sub).mkdir(parents=True)
    (root / "errors.py").write_text("from pimc_ray.data.aoi import AOI\n")
    (root / "kernels" / "x.py").write_text("def f():\n    from pimc_ray.data import stack\n")
    (root / "data" / "y.py").write_text("import pimc_ray.models.heads\nfrom pimc_ray.kernels import xp\n")
    (root / "io" / "z.py").write_text("from pimc_ray.models.checkpoint import EncoderRef\n")
    (root / "mapping" / "w.py").write_text(
        "from pimc_ray.local import LocalS3Server\nfrom pimc_ray import errors\n"
    )
    (root / "cli" / "v.py").write_text("from pimc_ray.local import LocalS3Server\n")
    found = violations(root)
    assert len(found) == 5, found
    assert any("errors.py" in f for f in found) and any("kernels/x.py:2" in f for f in found)
    assert any("data/y.py:1" in f for f in found) and any("io/z.py" in f for f in found)
    assert any("mapping/w.py:1" in f and "local" in f for f in found)
