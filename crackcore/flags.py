"""One flag per knob: a frozen config's own fields and its nested configs' fields go by their own flat names.

The CLI's flags, a notebook's `parameters` cell and the studies' overrides all name a knob the same way, whether
it lives in `TrainConfig` itself or in one of its nested configs (`labels`, `loss`, `augmentation`, `decoding`).
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace


def nested_configs(cfg) -> tuple[str, ...]:
    """The fields of `cfg` that are configs of their own."""
    return tuple(f.name for f in fields(cfg) if is_dataclass(getattr(cfg, f.name)))


def flag_names(cfg) -> set[str]:
    """Every knob of `cfg` by its flag name: its own plain fields and its nested configs' fields."""
    inner = nested_configs(cfg)
    own = {f.name for f in fields(cfg) if f.name not in inner}
    return own.union(*(flag_names(getattr(cfg, n)) for n in inner))


def with_flags(cfg, **flags):
    """`cfg` with knobs replaced by their flag names, whether fields of its own or of a nested config."""
    inner = nested_configs(cfg)
    top, parts = {}, {}
    for k, v in flags.items():
        owner = next((n for n in inner if k in flag_names(getattr(cfg, n))), None)
        if owner is not None:
            parts.setdefault(owner, {})[k] = v
        elif k in {f.name for f in fields(cfg)} and k not in inner:
            top[k] = v
        else:
            raise TypeError(f"{type(cfg).__name__} has no knob {k!r}")
    return replace(cfg, **top, **{n: with_flags(getattr(cfg, n), **d) for n, d in parts.items()})
