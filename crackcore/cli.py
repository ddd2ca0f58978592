"""The `crackcore` command line: one sub-command per task, one flag per field of that task's config dataclass."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import sys
from pathlib import Path

from .flags import flag_names, with_flags

EXIT_USAGE = 2


def field_comments(cls) -> dict[str, str]:
    """The `# comment` after each field in the dataclass source: the one place a knob is documented."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if m:
            comments[m.group(1)] = m.group(2).replace("%", "%%")
    return comments


def add_config_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """`--field-name` for every field of a frozen config dataclass (tuples as N,N), defaults shown by --help."""
    docs = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):  # a nested config: its fields are flags of their own
            add_config_flags(parser, type(default))
        elif isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, default=default, action=argparse.BooleanOptionalAction,
                                help=docs.get(f.name, " "))
        elif isinstance(default, (int, float, str)):
            parser.add_argument(flag, dest=f.name, default=default, type=type(default),
                                metavar=type(default).__name__.upper(), help=docs.get(f.name, " "))
        elif isinstance(default, tuple) and default and all(isinstance(v, (int, float)) for v in default):
            parser.add_argument(flag, dest=f.name, default=default, type=_numbers(default),
                                metavar=",".join(["N"] * len(default)), help=docs.get(f.name, " "))
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line flag for a default of {default!r}")


def _numbers(default: tuple):
    """argparse type for a tuple knob: comma-separated numbers, as many as the default has, of its types."""
    def parse(text: str) -> tuple:
        parts = text.split(",")
        if len(parts) != len(default):
            raise argparse.ArgumentTypeError(f"expected {len(default)} comma-separated numbers, got {text!r}")
        try:
            return tuple(type(d)(p) for d, p in zip(default, parts))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers like {','.join(map(str, default))}, got {text!r}")
    return parse


def config_from_args(cls, args: argparse.Namespace):
    """The config `cls` from parsed flags: its defaults with every flag of its own (or of a nested config) applied."""
    default = cls()
    return with_flags(default, **{k: v for k, v in vars(args).items() if k in flag_names(default)})


def build_parser() -> argparse.ArgumentParser:
    from .data.synth import SynthConfig
    from .engine.evaluate import EvalConfig
    from .engine.config import TrainConfig
    from .inference.onnx_export import ExportConfig
    from .inference.predict import PredictConfig
    from .measure.bench import BenchConfig

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="crackcore", description="Modified CenterNet for crack detection on sanitary "
                                "ceramics: synthetic data, training, evaluation, prediction, benchmarks.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write the synthetic crack data set (PNGs, COCO JSON, data card)",
                       formatter_class=fmt)
    s.add_argument("--out", default="data/synth", help="output folder")
    add_config_flags(s, SynthConfig)
    t = sub.add_parser("train", help="train one Table I variant (§IV-B)", formatter_class=fmt)
    add_config_flags(t, TrainConfig)
    t.add_argument("--resume", action="store_true", help="continue the run in --out (or do nothing if finished)")
    e = sub.add_parser("evaluate", help="AP on the test split and Table II on the background split",
                       formatter_class=fmt)
    add_config_flags(e, EvalConfig)
    r = sub.add_parser("predict", help="detect cracks in image files or folders of any size", formatter_class=fmt)
    r.add_argument("inputs", nargs="+", help="image files or folders")
    add_config_flags(r, PredictConfig)
    x = sub.add_parser("export", help="a checkpoint as ONNX (fp32 or int8), with a parity check", formatter_class=fmt)
    add_config_flags(x, ExportConfig)
    b = sub.add_parser("bench", help="volume, GFLOPs, latency and throughput of the variants", formatter_class=fmt)
    add_config_flags(b, BenchConfig)
    return p


def run(args: argparse.Namespace) -> int | None:
    if args.command == "synth":
        from .data.synth import SynthConfig
        from .data.synth_files import write_dataset
        write_dataset(Path(args.out), config_from_args(SynthConfig, args))
    elif args.command == "train":
        from .engine.config import TrainConfig
        from .engine.train import train
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        cfg = config_from_args(TrainConfig, args)
        if distributed:
            from .engine.distributed import train_distributed
            train_distributed(cfg, resume=args.resume)
        else:
            out = train(cfg, resume=args.resume)
            print(f"trained {cfg.variant}: {out / 'model.pt'}")
    elif args.command == "evaluate":
        from .engine.evaluate import EvalConfig, evaluate
        m = evaluate(config_from_args(EvalConfig, args))
        line = f"{m['variant']}: AP07 {m['ap07']:.2f}  AP(all-point) {m['ap_all']:.2f}"
        if "background" in m:
            bg = m["background"]
            line += f"  backgrounds without a box {bg['no_box']}/{bg['images']} ({bg['accuracy']:.2f}%)"
        print(line)
    elif args.command == "predict":
        from .inference.predict import PredictConfig, predict
        res = predict(config_from_args(PredictConfig, args), args.inputs)
        n = sum(map(len, res["images"].values()))
        print(f"{n} detections in {len(res['images'])} images (route {res['route']}) → {args.out}")
        for e in res["errors"]:  # the readable images are written; each unreadable one is named with its reason
            print(f"crackcore predict: error: {e['error']}", file=sys.stderr)
        if res["errors"]:
            return EXIT_USAGE
    elif args.command == "export":
        from .inference.onnx_export import ExportConfig, export
        print(f"wrote {export(config_from_args(ExportConfig, args))}")
    elif args.command == "bench":
        from .measure.bench import BenchConfig, bench, summary
        cfg = config_from_args(BenchConfig, args)
        results = bench(cfg)
        if cfg.out:
            text = summary(cfg.out)
            print(text)
            if cfg.readme:
                write_readme(text)
        else:
            print(json.dumps({p: r["result"] for p, r in results.items()}, indent=1, default=str))


def write_readme(text: str, readme: Path | None = None) -> None:
    """Replace the README's text between `<!-- bench:start -->` and `<!-- bench:end -->` (`bench --readme`)."""
    from .storage import ROOT

    readme = readme or ROOT / "README.md"
    s = readme.read_text()
    a, b = "<!-- bench:start -->", "<!-- bench:end -->"
    if a not in s or b not in s:
        raise ValueError(f"{readme} has no {a} … {b} markers")
    readme.write_text(s[:s.index(a) + len(a)] + "\n" + text.strip() + "\n" + s[s.index(b):])


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2 (predict: one per unreadable input); success exits 0."""
    from .data.images import DataError
    from .storage import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        code = run(args)
    except (FileNotFoundError, FileExistsError, DataError, CheckpointError, ValueError) as e:
        print(f"crackcore {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"crackcore {args.command}: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
