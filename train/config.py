"""Training configurations (dataclasses), readable from TOML files with command-line overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from lbedge.errors import InputError, UsageError


@dataclass
class BindConfig:
    """Bind a modality to the frozen language tower by contrastive LoRA tuning (the LanguageBind recipe)."""

    base: str = ""  # checkpoint whose towers initialise the run (a new modality starts from image)
    modality: str = "image"  # modality of the data and of the tower being bound
    modality_fields: dict = field(default_factory=dict)  # vision_config overrides of a new modality (audio grid...)
    data: str = ""  # folder (class subfolders, or files with .txt sidecars) or CSV/JSONL manifest
    val_data: str = ""  # held-out set; default: val_fraction of data
    val_fraction: float = 0.2
    output: str = "runs/bind"
    lora_r: int = 16  # 0: train the whole vision tower and projection instead (no LoRA)
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])
    # parameter-name prefixes trained in full beside LoRA: e.g. "vision_model.embeddings" when the new modality's
    # input (an audio spectrogram) is unlike the base tower's, or "visual_projection"
    train_also: list[str] = field(default_factory=list)
    learn_temperature: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = 100
    warmup_steps: int = 5
    precision: str = "auto"  # auto | fp32 | bf16 (autocast where the device supports it)
    seed: int = 0
    augment: bool = True  # training-time augmentation (never used at inference)
    augment_flip: bool = True  # horizontal flips (off when texts say left/right)
    # probability that a sample is trained with one of its texts that names no colour (RGB) / temperature
    # (thermal), its input re-coloured / re-tempered (data.photometric): categories are learned apart from those
    # attributes, so unseen combinations are recognised. 0: off (texts that name none are then not augmented)
    attribute_augment: float = 0.0
    eval_every: int = 25
    save_every: int = 25
    on_bad_data: str = "skip"  # skip (report and continue) | stop
    device: str = "cpu"
    tensorboard: bool = False

    def validate(self) -> "BindConfig":
        if not self.base or not self.data:
            raise UsageError("bind needs `base` (a checkpoint folder) and `data` (a folder or manifest)")
        if self.on_bad_data not in ("skip", "stop"):
            raise InputError("on_bad_data must be 'skip' or 'stop'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError("precision must be auto, fp32 or bf16")
        return self


@dataclass
class DistillConfig:
    """Distil a teacher encoder's vision tower into a smaller student in the same language space."""

    teacher: str = ""
    student: str = "vit-s16"  # preset name, or "width,depth,heads,patch"
    resolution: int = 0  # student input size (pixels); 0 = the teacher's (224). Not for audio.
    data: str = ""  # unlabeled inputs of the teacher's modality
    val_fraction: float = 0.2
    output: str = "runs/distill"
    lr: float = 5e-4
    weight_decay: float = 0.05
    batch_size: int = 16
    max_steps: int = 200
    warmup_steps: int = 10
    affinity_weight: float = 1.0  # TinyCLIP-style affinity mimicking against text embeddings
    affinity_temperature: float = 0.05
    probe_labels: list[str] = field(default_factory=list)  # texts for affinity mimicking; default: built-in set
    inherit: bool = True  # initialise from the teacher's weights where shapes allow
    seed: int = 0
    augment: bool = True
    photometric: bool = False  # also re-colour RGB / re-temper thermal views (the teacher labels them)
    eval_every: int = 50
    save_every: int = 50
    on_bad_data: str = "skip"
    device: str = "cpu"
    tensorboard: bool = False  # also write metrics for TensorBoard (output/tb)

    def validate(self) -> "DistillConfig":
        if not self.teacher or not self.data:
            raise UsageError("distill needs `teacher` (a checkpoint folder) and `data` (a folder of inputs)")
        return self


def load_config(cls: type, path: str | Path | None, overrides: dict[str, Any] | None = None) -> Any:
    """A config from a TOML file (top-level keys, or a ``[bind]``/``[distill]`` table) plus overrides."""
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"cannot read config {path}: {exc}") from exc
        section = "bind" if cls is BindConfig else "distill"
        raw = raw.get(section, raw)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} option(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return cls(**raw).validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)
