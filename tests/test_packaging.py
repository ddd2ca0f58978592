"""The install story: environment.yml and pyproject.toml agree; the CI entry runs the README's test command."""
import re
import tomllib
from pathlib import Path

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


def test_no_import_cycles_even_through_lazy_imports():
    """Every `from .x import` in crackcore, at module level or inside a function, forms a graph without cycles:
    a module that reaches back to one importing it hides a layering mistake even when the import is deferred."""
    import ast

    pkg = ROOT / "crackcore"
    mods = {p.stem for p in pkg.glob("*.py")}
    edges = {m: set() for m in mods}
    for m in mods:
        for node in ast.walk(ast.parse((pkg / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                edges[m] |= {n for n in names if n in mods}
    state: dict[str, str] = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(edges[m]):
            assert state.get(n) != "open", f"import cycle: {' → '.join(path + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"
    for m in sorted(mods):
        if m not in state:
            visit(m, [m])
    assert edges["fast"] >= {"route"} and "fast" not in edges["quant"] | edges["export"]  # the layering it checks


def test_an_isa_cap_below_bf16_turns_bf16_autocast_off(monkeypatch):
    """Under ONEDNN_MAX_CPU_ISA=AVX2 (an older CPU imitated) bf16 kernels run as slow reference code: not chosen."""
    import torch

    from crackcore.runtime import cpu_has_bf16, pick_precision

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_has_bf16() and pick_precision(torch.device("cpu"), "auto") == "fp32"
    assert pick_precision(torch.device("cpu"), "bf16") == "bf16"  # asked for explicitly: honoured
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    on_this_cpu = "avx512_bf16" in (Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else "")
    assert cpu_has_bf16() == on_this_cpu  # a cap that keeps bf16 leaves the answer to the CPU
