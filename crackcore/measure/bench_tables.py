"""`make bench`'s tables as markdown: Table I's speed columns, the inference routes, training against the
convolution limit, and the hosts a figure was measured on, every speed beside its same-run ratios."""
from __future__ import annotations

import pandas as pd

from ..paper import PAPER_TABLE1


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def bench_tables(parts: dict[str, dict], hosts: list[dict] = ()) -> str:
    """Markdown for `make bench`'s results: one table per part present, every speed beside its same-run ratios."""
    out = []
    if "table1" in parts:
        rows = parts["table1"]["result"]
        df = pd.DataFrame([{"variant": r["variant"], "input": f"{r['resolution']} px", "stride": r["downsampling"],
                            "FPS fp32 eager": round(r["fps_batch1_fp32"], 1),
                            f"FPS eager {r['precision']}": round(r["fps_batch1"], 1),
                            f"FPS route {r['route']}": round(r["fps_batch1_route"], 1),
                            "route / fp32": f"{r['fps_batch1_route'] / r['fps_batch1_fp32']:.2f}×",
                            "route / its limit": _pct(r["route_of_limit"]),
                            "paper FPS": PAPER_TABLE1[r["variant"]]["fps"]}
                           for r in rows]).set_index("variant")
        out += ["**Table I speed**, batch 1 end to end (uint8 image → boxes); untrained weights: speed does not "
                "depend on them. *Its limit* = the variant's convolutions alone in the route's precision, same run.",
                "", df.to_markdown(), ""]
        by = {r["variant"]: r for r in rows}
        if {"modified_aff", "centernet_r18"} <= set(by):
            a, b = by["modified_aff"], by["centernet_r18"]
            ratio = a["fps_batch1_route"] / b["fps_batch1_route"]
            out += [f"modified_aff at 80 px / centernet_r18 at 384 px: **{ratio:.2f}×** on route {a['route']}, "
                    f"{a['fps_batch1'] / b['fps_batch1']:.2f}× eager, "
                    f"{a['fps_batch1_fp32'] / b['fps_batch1_fp32']:.2f}× fp32 eager; their FLOP ratio "
                    f"{b['gflops'] / a['gflops']:.2f} (paper 30 / 20 = 1.50×)", ""]
    if "routes" in parts:
        res = parts["routes"]["result"]
        ref = res["fp32_ap07"]
        df = pd.DataFrame([{"route": r["route"], "precision": r["precision"],
                            "FPS (batch 1)": round(r["fps_batch1"], 1), "× fp32": f"{r['x_fp32']:.2f}×",
                            "of its limit": _pct(r["of_limit"]),
                            "AP07": round(r["ap07"], 2), "ΔAP vs fp32": round(r["ap07"] - ref, 2) if ref else None,
                            "keeps AP": "yes" if r["keeps_ap"] else "no", "note": r["note"]}
                           if r["available"] else {"route": r["route"], "note": "unavailable: " + r["reason"]}
                           for r in res["rows"]]).set_index("route")
        limits = ", ".join(f"{p} {v:.1f} FPS" for p, v in res["limits_fps"].items())
        out += [f"**Inference routes** of the trained `{res['variant']}` (`{res['checkpoint']}`), batch 1 end to end "
                f"(uint8 → boxes), AP07 on the {res['test_images']} test images; convolution limits in this run: "
                f"{limits} (int8 has no dense limit measured: its column is –)", "", df.to_markdown(), "",
                f"Fastest route keeping AP07 within {parts['routes']['config']['ap_tolerance']} of fp32: "
                f"**{res['best']}**; fastest without calibration data: **{res['best_without_calibration']}**; "
                f"`crackcore predict` default (`--route auto`) on this machine: **{res['auto']}**.", ""]
    if "training" in parts:
        df = pd.DataFrame([{"variant": r["variant"], "train img/s": round(r["train_img_s"], 1),
                            "conv-limit img/s": round(r["limit_img_s"], 1),
                            "efficiency": f"{100 * r['efficiency']:.0f}%",
                            "GFLOP/s": round(r["achieved_gflop_s"]), "loader img/s": round(r["loader_img_s"], 1),
                            "data wait (serial)": f"{100 * r['data_wait_share_serial']:.1f}%",
                            "data wait (paper run)": (f"{100 * r['paper_run_data_wait_share']:.1f}%"
                                                      if "paper_run_data_wait_share" in r else "–")}
                           for r in parts["training"]["result"]]).set_index("variant")
        out += ["**Training** (batch 16, real data and loss, Adam; limit = the step's convolutions alone, same shapes)",
                "", df.to_markdown(), ""]
    if "predict" in parts:
        batch1 = {r["route"]: r["fps_batch1"] for r in parts.get("routes", {}).get("result", {}).get("rows", [])
                  if r.get("available")}
        df = pd.DataFrame([{"route": r["route"], "images": r["images"], "wall s": round(r["wall_s"], 1),
                            "img/s": round(r["images_per_s"], 1),
                            "/ route's batch-1 FPS": (f"{r['images_per_s'] / batch1[r['route']]:.2f}×"
                                                      if r["route"] in batch1 else "–"),
                            "images/hour": f"{r['images_per_hour']:,.0f}",
                            "peak RSS MB": round(r["peak_rss_mb"])} for r in parts["predict"]["result"]])
        out += ["**`crackcore predict`** on a folder of 80×80 PNGs (fresh process: start-up, model load, reading, "
                "annotated PNGs and JSON/CSV included)", "", df.set_index("route").to_markdown(), ""]
    if hosts:
        out += hosts_table(hosts)
    first = next(iter(parts.values()), {})
    prov, mach = first.get("provenance", {}), first.get("machine", {})
    if prov:
        when = f"{mach['date']}, " if "date" in mach else ""
        isa = f" [{mach['isa']}]" if "isa" in mach else ""
        out += [f"Measured {when}on {prov.get('device')}{isa}, {prov.get('cpu_threads')} threads, "
                f"torch {prov.get('torch')}, commit {str(prov.get('git_commit'))[:10]}.", ""]
    return "\n".join(out)


def hosts_table(hosts: list[dict], bar: float = 30.0) -> list[str]:
    """The default route's batch-1 FPS of `modified_aff` on every host measured, and how many met `bar` FPS."""
    df = pd.DataFrame([{"date": h["date"], "CPU": h["cpu"], "ISA": h["isa"], "threads": h["threads"],
                        "route": h.get("route"), "FPS route": f"{h['fps_route']:.1f}",
                        "FPS fp32": f"{h['fps_fp32']:.1f}" if h.get("fps_fp32") else "–",
                        "route / fp32": f"{h['fps_route'] / h['fps_fp32']:.2f}×" if h.get("fps_fp32") else "–",
                        "route / its limit": _pct(h.get("route_of_limit")),
                        f"≥ {bar:g} FPS": "yes" if h["fps_route"] >= bar else "no", "source": h["source"]}
                       for h in hosts if h.get("fps_route")])
    if df.empty:
        return []
    fps = sorted(h["fps_route"] for h in hosts if h.get("fps_route"))
    slow = [f for f in fps if f < bar]
    span = (lambda a, b, unit="": f"{a}{unit}" if a == b else f"{a}–{b}{unit}")
    verdict = f"**{len(fps) - len(slow)} of {len(fps)} hosts** measured met {bar:g} FPS on the default route"
    if slow:
        verdict += (f"; the others reached {span(f'{slow[0]:.1f}', f'{slow[-1]:.1f}', ' FPS')} "
                    f"({span(f'{100 * slow[0] / bar:.0f}', f'{100 * slow[-1] / bar:.0f}', ' %')} of {bar:g})")
    verdict += "."
    return ["**Hosts** (`results/bench/hosts.json`): `modified_aff`, batch 1 end to end, on the default route of each "
            "host", "", df.set_index("date").to_markdown(disable_numparse=True), "", verdict, ""]
