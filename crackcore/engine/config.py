"""What a training run is: `TrainConfig` (§IV-B's protocol as defaults) and how a run records and compares it.

A checkpoint, `config.json` and a fine-tuned child's `parent.json` hold the same record. Two records name the same
run when they agree in their comparable form, so a run resumes, a published checkpoint is restored and finished
metrics are kept only for exactly the settings asked for.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..data.transforms import AugmentConfig
from ..flags import nested_configs
from ..labels import LabelConfig
from ..losses import LossConfig
from ..models import HM_INITS, NECK_INITS, VARIANTS, WH_SCALE
from ..storage import portable_path


WH_INITS = ("mean", "default", "centernet")  # how the size head starts (models.head plus the mean-size bias)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; the CLI's `train` flags and notebook 03's parameters map onto these fields."""

    variant: str = "modified_aff"  # centernet_r18 | modified | modified_aff (Table I)
    data: str = "data/synth"  # synthetic root (with train.json), a COCO JSON file, or a Pascal VOC folder
    out: str = "runs/modified_aff"  # run folder: last.pt, model.pt, history.jsonl, config.json
    epochs: int = 25  # §IV-B
    batch_size: int = 16  # §IV-B; under torchrun the global batch, split over the processes
    lr: float = 2.5e-4  # Adam, §IV-B
    lr_drop_epoch: int = 20  # lr × lr_drop_factor from this epoch on (0-based: epochs 21–25 of 25)
    lr_drop_factor: float = 0.1  # 2.5e-4 → 2.5e-5, §IV-B
    seed: int = 0  # seeds initialisation, shuffling and augmentation
    device: str = "auto"  # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast where the hardware has it) | bf16 | fp32
    workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    channels_last: bool = True  # NHWC activations: ~20% faster bf16 convolutions on this CPU, same results to rounding
    limit: int = 0  # train on the first `limit` images only (quick profile); 0 = all
    augmentation: AugmentConfig = AugmentConfig()  # §IV-B: random crop, flips, colour jitter and their strengths
    imagenet: str = ""  # optional local torchvision ResNet-18 state dict; empty = from scratch
    init: str = ""  # a crackcore checkpoint of the same variant to start from (fine-tuning); empty = from scratch
    labels: LabelConfig = LabelConfig()  # §III-A: the Gaussian's radius and σ rules, its shape, boxes per image
    wh_init: str = "mean"  # size head start: mean (default init, bias at the mean training size) | default | centernet
    wh_scale: float = WH_SCALE  # the size head's fixed output scale (1 with wh_init=centernet is CenterNet's head)
    neck_init: str = "bilinear"  # upsampling deconvolutions' start: bilinear (1×1, then bilinear ×2) | default (PyTorch's)
    hm_init: str = "default"  # heatmap head's hidden convs' start: default (PyTorch's) | he (keeps the signal's scale)
    loss: LossConfig = LossConfig()  # eq. (1)'s α, β and eq. (5)'s weights

    def __post_init__(self):
        """Choices are checked when the config is made, before any file is read: a typo fails first and alone."""
        for name, allowed in (("variant", VARIANTS), ("wh_init", WH_INITS), ("neck_init", NECK_INITS),
                              ("hm_init", HM_INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        if self.init and self.imagenet:  # both would write the backbone: the run would have two parents
            raise ValueError("--init and --imagenet are two starting points; give one of them")


PATH_FIELDS = ("data", "out", "imagenet", "init")
NESTED_FIELDS = nested_configs(TrainConfig())  # configs of their own, stored whole; their fields are flags
# Knobs added after runs were published, with the value every earlier run trained with. Records are compared
# without them where they hold that value, so a run recorded before a knob existed still matches a run asked for
# today with that knob unchanged (published checkpoints are restored, finished runs resumed, not retrained).
LATER_FIELDS = {"init": "", "neck_init": "default", "hm_init": "default", "label_shape": "round", "alpha": 2.0,
                "beta": 4.0, "crop_p": 0.5, "crop_scale": [0.6, 1.0], "min_visibility": 0.3, "min_size": 1.0,
                "hflip_p": 0.5, "vflip_p": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.0}


class ConfigMismatch(ValueError):
    """A run folder holds a run made with other settings: resuming it would mix two configurations."""


def recorded_config(cfg: TrainConfig) -> dict:
    """Every setting of a run, nested configs whole, paths made repository-relative: what checkpoints record.

    In JSON's types (tuples as lists), so the checkpoint, config.json and a child's parent.json hold equal records.
    """
    return json.loads(json.dumps({**asdict(cfg), **{k: portable_path(getattr(cfg, k)) for k in PATH_FIELDS}}))


def flatten(record: dict) -> dict:
    """A recorded config with its nested configs spread into their fields: one key per command-line flag."""
    flat = {}
    for k, v in record.items():
        flat.update(v if k in NESTED_FIELDS and isinstance(v, dict) else {k: v})
    return flat


def comparable(record: dict) -> dict:
    """The form two records are compared in: flattened, knobs added later dropped where they hold their old value."""
    flat = flatten(record)
    return {k: v for k, v in flat.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def check_same(state: dict, asked: dict, path: Path) -> None:
    """Refuse to resume or reuse a run recorded with other settings than `asked` (§IV-B's runs never mix)."""
    diff = _differing(comparable(state["config"]), comparable(asked))
    if diff:
        raise ConfigMismatch(f"{path} was trained with other settings ({', '.join(diff)}); use another --out")


def _differing(have: dict, want: dict) -> list[str]:
    """The keys two compared records disagree on, sorted (named in ConfigMismatch's message)."""
    return sorted(k for k in {**have, **want} if have.get(k) != want.get(k))


# What two runs may differ in and still be one run up to the earlier of their lr drops: every epoch seeds its own
# shuffling and augmentation from (seed, epoch), and the learning rate is the same until either run drops it.
BRANCH_FIELDS = ("out", "epochs", "lr_drop_epoch")


def check_branch(state: dict, asked: dict, path: Path) -> None:
    """Refuse to start the run `asked` from checkpoint `state` unless it is that run's own state (§IV-B's schedule):
    the same settings but length and lr drop, and an epoch no later than either run's drop or the asked length."""
    have, want = ({k: v for k, v in comparable(r).items() if k not in BRANCH_FIELDS} for r in (state["config"], asked))
    diff = _differing(have, want)
    if diff:
        raise ConfigMismatch(f"{path} was trained with other settings ({', '.join(diff)}); it cannot start this run")
    epoch, last = state["epoch"], min(state["config"]["lr_drop_epoch"], asked["lr_drop_epoch"], asked["epochs"])
    if epoch > last:
        raise ConfigMismatch(f"{path} holds epoch {epoch}, past epoch {last} where the two runs' learning rates or "
                             f"lengths part; it cannot start this run")
