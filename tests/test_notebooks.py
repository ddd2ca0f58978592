"""nbval re-runs the executed notebooks under tests/notebooks/: they must carry the current sources of notebooks/,
or a change to a notebook would go unchecked until someone remembers `make nbrefs`."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFS = sorted((ROOT / "tests" / "notebooks").glob("*.ipynb"))


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells
            if c["cell_type"] == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


def test_every_notebook_has_a_reference():
    sources = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    covered = {r.stem if not r.stem.startswith("03_") else "03_training" for r in REFS}
    assert covered == sources


@pytest.mark.parametrize("ref", REFS, ids=lambda p: p.stem)
def test_reference_runs_the_current_source(ref):
    src = ROOT / "notebooks" / ("03_training.ipynb" if ref.stem.startswith("03_") else ref.name)
    assert code_cells(ref) == code_cells(src), f"{ref.name} is stale: run `make nbrefs`"
