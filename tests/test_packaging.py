"""The install story: environment.yml and pyproject.toml agree; the CI entry runs the README's test command."""
import re
import tomllib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def requirements(lines):
    out = {}
    for line in lines:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*([<>=!~].*)$", line.strip().strip('"').strip("-").strip())
        if m:
            out[m.group(1).lower()] = m.group(2).replace(" ", "")
    return out


def test_environment_yml_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ours = requirements(meta["dependencies"] + [r for extra in meta["optional-dependencies"].values() for r in extra])
    env = requirements(l for l in (ROOT / "environment.yml").read_text().splitlines() if l.strip().startswith("- "))
    assert ours == {k: v for k, v in env.items() if k in ours}
    assert set(ours) <= set(env), f"missing from environment.yml: {set(ours) - set(env)}"
    assert ours["torch"] == "==2.14.1" and ours["torchvision"] == "==0.29.1"


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# The layers, bottom up: a module imports from its own layer or below, never above (the README's folder map).
LAYERS = [{"crackcore", "models", "labels", "losses", "decode", "metrics", "paper", "device", "storage", "flags"},
          {"data"}, {"inference"}, {"engine"}, {"measure"}, {"study"}, {"cli", "__main__"}]


def import_graph() -> dict[str, set[str]]:
    """Every relative import in crackcore, at module level or inside a function, as edges between dotted modules."""
    import ast

    pkg = ROOT / "crackcore"
    files = {}
    for p in pkg.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if p.name == "__init__.py" else parts)] = p
    edges = {m: set() for m in files}
    for m, p in files.items():
        here = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[:len(here) - node.level + 1] + (node.module.split(".") if node.module else [])
                for a in node.names:  # `from ..data import synth` imports the module crackcore.data.synth
                    sub = ".".join(base + [a.name])
                    edges[m].add(sub if sub in files else ".".join(base))
    return {m: {d for d in deps if d in files} for m, deps in edges.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    return next(i for i, names in enumerate(LAYERS) if key in names)


def test_no_import_cycles_even_through_lazy_imports():
    """The import graph has no cycles: a module that reaches back to one importing it hides a layering mistake even
    when the import is deferred into a function."""
    edges = import_graph()
    state: dict[str, str] = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(edges[m]):
            assert state.get(n) != "open", f"import cycle: {' → '.join(path + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"
    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert "crackcore.inference.route" in edges["crackcore.inference.routes"]  # the graph sees nested packages


def test_no_upward_imports():
    """Measurement never reaches into the study, inference never into training: each layer uses only those below."""
    edges = import_graph()
    upward = [f"{m} → {d}" for m, deps in edges.items() for d in deps if layer(d) > layer(m)]
    assert upward == []
    assert layer("crackcore.study.experiment") > layer("crackcore.engine.train") > layer("crackcore.models")


def test_a_planted_cycle_and_upward_import_are_caught(tmp_path, monkeypatch):
    """The two checks above fail on a tree that has the faults they look for."""
    pkg = tmp_path / "crackcore"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("def f():\n    from .engine.train import x\n")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "engine" / "train.py").write_text("from ..models import f\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    edges = import_graph()
    assert edges["crackcore.models"] == {"crackcore.engine.train"}
    assert edges["crackcore.engine.train"] == {"crackcore.models"}
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycles_even_through_lazy_imports()
    with pytest.raises(AssertionError):
        test_no_upward_imports()


def test_an_isa_cap_below_bf16_turns_bf16_autocast_off(monkeypatch):
    """Under ONEDNN_MAX_CPU_ISA=AVX2 (an older CPU imitated) bf16 kernels run as slow reference code: not chosen."""
    import torch

    from crackcore.device import cpu_has_bf16, pick_precision

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_has_bf16() and pick_precision(torch.device("cpu"), "auto") == "fp32"
    with pytest.warns(RuntimeWarning, match="without native bf16"):  # asked for explicitly: honoured, with a warning
        assert pick_precision(torch.device("cpu"), "bf16") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fp32 and auto are silent
        assert pick_precision(torch.device("cpu"), "fp32") == "fp32" == pick_precision(torch.device("cpu"), "auto")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    on_this_cpu = "avx512_bf16" in (Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else "")
    assert cpu_has_bf16() == on_this_cpu  # a cap that keeps bf16 leaves the answer to the CPU
