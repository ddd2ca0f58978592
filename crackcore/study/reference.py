"""Regression references for the notebooks' quick profile: floats checked within tolerances, never digit for digit.

nbval compares what a cell prints. Counts and data that do not depend on float accumulation print exactly; a float
that comes out of training or inference (a loss, an AP, a fusion weight) moves in its last digits with the CPU's
kernels and summation order, so the notebooks print it under `# NBVAL_IGNORE_OUTPUT` and hand it to `check`,
which prints only the reference and the tolerance (the same text on every machine) and raises when the value
leaves the band. `make nbrefs` writes the references (CRACKCORE_REFERENCES=write); `make test` checks them, once
with the defaults and once with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 (another float
order), so references that only hold on one machine fail there.

Tolerances (TOLERANCES) were set from a measurement (`make nbtolerance`): nbval under the second environment; each is
about ten times the largest difference seen for its kind (README, "Regression references"). Correlations of the
quick profile's nearly constant predicted sizes are not checked: two float orders moved them by up to 0.09. Nor is
AP at the true centres, where every box takes that nearly constant size, so one float order flips IoU ≥ 0.5 for many
cracks at once (10.3 against 5.7 on one training split).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..storage import ROOT, atomic_write

REFERENCES = ROOT / "tests" / "notebooks" / "references.json"
# kind: (absolute tolerance, relative tolerance); a value passes within max(abs, rel × |reference|). Largest spread
# measured under ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 against the defaults (`make
# nbtolerance`, AMD EPYC with AVX2, all five torch notebooks), and the tolerance about ten times it:
TOLERANCES = {
    "loss": (0.0, 0.05),  # training losses: spread ≤ 0.53 % relative (centernet_r18's wh loss, 38.98 ± 0.21)
    "ap": (2.0, 0.0),  # AP in percent: 0 in the quick profile; one detection of its test split moves it by ~3
    "score": (0.01, 0.0),  # sigmoid scores: spread ≤ 3.2e-6 (background maxima near 0.098)
    "weight": (0.03, 0.0),  # AFF softmax weights and shares in [0, 1]: spread ≤ 0.0029 (share of pixels b > a)
    "size": (0.005, 0.0),  # median size IoU at the true centres: spread ≤ 2.1e-4
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _write(path: Path, name: str, kind: str, values: dict[str, float]) -> None:
    refs = _load(path)
    refs[name] = {"kind": kind, "values": values}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n"))


def within(value: float, reference: float, kind: str) -> bool:
    """True when `value` is within the tolerance of `kind` of `reference` (NaN matches NaN only)."""
    if math.isnan(reference) or math.isnan(value):
        return math.isnan(reference) and math.isnan(value)
    a, r = TOLERANCES[kind]
    return abs(value - reference) <= max(a, r * abs(reference))


def check(profile, name: str, values: dict[str, float], kind: str) -> None:
    """Quick profile: compare `values` with the stored references of `name` (or store them, under make nbrefs)."""
    if getattr(profile, "name", profile) != "quick":
        return
    values = {k: float(v) for k, v in values.items()}
    if os.environ.get("CRACKCORE_OBSERVED"):  # also keep what this run saw (make nbtolerance)
        _write(Path(os.environ["CRACKCORE_OBSERVED"]), name, kind, values)
    if os.environ.get("CRACKCORE_REFERENCES") == "write":
        _write(REFERENCES, name, kind, values)
    if name not in _load(REFERENCES):
        raise KeyError(f"no reference for {name!r} in {REFERENCES}; run `make nbrefs`")
    refs = _load(REFERENCES)[name]["values"]
    a, r = TOLERANCES[kind]
    bad = {k: (v, refs.get(k)) for k, v in values.items() if k not in refs or not within(v, refs[k], kind)}
    for k in values:
        print(f"{name}.{k}: within max({a:g}, {r:g} × |ref|) of the reference {refs.get(k, float('nan')):.4g}")
    if bad:
        raise AssertionError(f"{name} outside its '{kind}' tolerance (value, reference): {bad}")


def deviations(*observed: str | Path) -> str:
    """Each checked value's largest spread between the references and the `observed` files (other float orders),
    beside its tolerance: the measurement behind TOLERANCES."""
    import pandas as pd

    runs = [_load(REFERENCES)] + [_load(Path(p)) for p in observed]
    rows = []
    for name, entry in runs[0].items():
        kind = entry["kind"]
        for k, v in entry["values"].items():
            seen = [r[name]["values"][k] for r in runs if name in r and k in r[name]["values"]]
            spread = max(seen) - min(seen) if not any(math.isnan(x) for x in seen) else float("nan")
            a, r = TOLERANCES[kind]
            rows.append({"kind": kind, "value": f"{name}.{k}", "reference": v, "spread": spread,
                         "tolerance": max(a, r * abs(v)), "runs": len(seen)})
    df = pd.DataFrame(rows)
    df["spread / tolerance"] = df["spread"] / df["tolerance"]
    return df.sort_values("spread / tolerance", ascending=False).to_string(index=False)
