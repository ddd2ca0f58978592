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
