"""The architecture, enforced: flux-core's layers import only downward and have no import
cycle, and the backend packages, the example third-party backend and the conformance kit use
only flux's public modules (docs/architecture.md, "Layers")."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLUX = ROOT / "packages" / "flux-core" / "src" / "flux"

LAYERS = [
    {"errors"},
    {"ir"},
    {"ops"},
    {"data"},
    {"model"},
    {"transforms"},
    {"layers"},
    {"backends", "hookspecs"},
    {"train"},
    {"debug"},
    {"onnx"},
    {"testing"},
]
"""flux-core's layers, bottom first (by the first name after ``flux.``): a module imports
only from its own layer and the layers below it. ``flux/__init__.py`` (the public API) is
above all but the conformance kit, which is written against it."""

PUBLIC = ("flux", "flux.ir", "flux.backends", "flux.hookspecs", "flux.testing")
"""What backends and the kit may import: these modules and what is below them, as long as no
part of the name starts with an underscore."""

OUTSIDE_USERS = [ROOT / "packages" / "flux-tf", ROOT / "packages" / "flux-mxnet",
                 ROOT / "packages" / "flux-cupy", ROOT / "examples" / "third_party_backend"]


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, base: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in `path`, those inside functions too;
    ``from a import b`` counts as importing ``a.b`` if that is a module, else ``a``."""
    module = _module_name(path, base)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[:len(parts) - node.level + 1] + (
                    [node.module] if node.module else []))
            else:
                target = node.module
            names = [f"{target}.{alias.name}" for alias in node.names]
            submodules = [name for name in names if _exists(name, base)]
            if len(submodules) < len(names):      # it takes names defined in `target` itself
                found.append((target, node.lineno))
            found += [(name, node.lineno) for name in submodules]
    return found


def _exists(module: str, base: Path) -> bool:
    """Whether `module` is a module file or package (flux's looked up in flux-core)."""
    relative = Path(*module.split("."))
    root = FLUX.parent if module.split(".")[0] == "flux" else base.parent
    return (root / relative).with_suffix(".py").exists() or (
        root / relative / "__init__.py").exists() or relative.name.startswith("_")


def _core_modules() -> dict[str, Path]:
    return {_module_name(p, FLUX): p for p in sorted(FLUX.rglob("*.py"))}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "flux" or len(parts) == 1:
        return None                       # not flux's, or the top-level package itself
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its subpackage to LAYERS (and to the "
                         f"diagram in docs/architecture.md)")


def test_every_module_of_flux_core_is_in_a_layer():
    for module in _core_modules():
        _layer(module)


def test_flux_core_imports_only_downward():
    upward = []
    for module, path in _core_modules().items():
        here = _layer(module)
        if here is None:
            continue
        for target, line in _imports(path, FLUX):
            there = _layer(target) if target.startswith("flux") else None
            if target == "flux":
                there = len(LAYERS) - 1   # the public API: just below the kit
            if there is not None and there > here:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({module}, layer {here}) "
                              f"imports {target} (layer {there})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_flux_core_has_no_import_cycle():
    modules = _core_modules()
    graph = {m: sorted({t for t, _ in _imports(p, FLUX) if t in modules and t != m})
             for m, p in modules.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in graph[m]:
            if t == "flux":
                continue                  # everything is under the top-level package
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _is_public(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "flux":
        return True                       # flux_tf, numpy, ... (not flux-core's business)
    if any(part.startswith("_") for part in parts):
        return False
    return any(module == p or (p != "flux" and module.startswith(p + ".")) for p in PUBLIC)


@pytest.mark.parametrize("package", OUTSIDE_USERS + [FLUX / "testing"],
                         ids=lambda p: p.name)
def test_backends_and_the_kit_import_only_public_flux_modules(package):
    if not package.exists():
        pytest.skip(f"{package.relative_to(ROOT)} does not exist")
    private = []
    for path in sorted(package.rglob("*.py")):
        if "build" in path.relative_to(package).parts:
            continue
        base = FLUX if package == FLUX / "testing" else path.parent
        for target, line in _imports(path, base):
            if target.startswith("flux.testing"):
                continue                  # the kit's own modules
            if not _is_public(target):
                private.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not private, "imports of flux-core's internals:\n" + "\n".join(private)


def test_the_checks_catch_an_upward_import_and_a_private_one(tmp_path):
    """The checks are not vacuous: a module importing from a higher layer is reported, and
    so is a backend importing an internal module."""
    assert _layer("flux.ir.trace") < _layer("flux.backends.compiled")
    fake = tmp_path / "flux" / "ir"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from flux.backends.compiled import Compiled\n"
                                 "import flux.model.param\n")
    found = _imports(fake / "bad.py", tmp_path / "flux")
    assert ("flux.backends.compiled", 1) in found and ("flux.model.param", 2) in found
    assert not _is_public("flux.model.param") and not _is_public("flux._ir")
    assert _is_public("flux.ir.primitives") and _is_public("flux.backends")
