"""A user's own classifier (``model=external``): any importable ``torch.nn.Module``, built by Hydra's instantiate,
attached to audiocert's frontend chain at a declared stage.

The model config of an external classifier (conf/model/external.yaml)::

    name: external
    net: {_target_: mypkg.nets.KWSNet, n_classes: 10}   # Hydra instantiate: the class and its constructor args
    weights: /path/to/state_dict.pt                     # a state_dict (or an audiocert best.pt); null: train it
    input: waveform                                     # waveform | magspec | mfbe: where its input sits in the chain
    classes: [yes, no, ...]                             # its output order, by name; or a file, one name a line

What the net receives at each ``input`` (B examples of N samples):

- ``waveform``: (B, N) float32 samples in [-1, 1] at ``dataset.sample_rate``; the net computes its own features
  (gradients of attacks flow through them).
- ``magspec``: (B, T, nfft / 2 + 1) magnitude spectrogram of the Deep Speaker frontend (audiocert.frontend).
- ``mfbe``: (B, T, num_filters) per-frame normalized Mel energies (add the channel dim in the net if it needs one).

Smoothing enters at the model's input or at an earlier stage (the frontend computes the stages between); a stage
after the input does not exist for that model, and is refused. The net returns (B, classes) logits, classes in
the order of ``model.classes``; :class:`ExternalClassifier` reorders them to the dataset's label order by name.

Layer: beside model and frontend (torch, hydra; no audiocert module above stages and frontend).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audiocert.frontend import DeepSpeakerFrontend
from audiocert.stages import STAGES

INPUTS: tuple[str, ...] = STAGES  # where an external net's input may sit: any stage of the chain


def is_external(model_cfg: Mapping[str, Any] | None) -> bool:
    """Whether a model config names a user's network (``model.net``) rather than the built-in ResCNN."""
    return bool(model_cfg) and model_cfg.get("net") is not None


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def net_spec(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The network's module path and constructor arguments, as plain data (provenance, the config hash)."""
    net = dict(_plain(model_cfg["net"]))
    target = net.pop("_target_", None)
    return {"target": target, "args": net}


def instantiate_net(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Build the user's network with Hydra's instantiate; ValueError in one line naming the override."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    spec = net_spec(model_cfg)
    target = spec["target"]
    if not isinstance(target, str) or not target.strip():
        raise ValueError("model.net._target_ is missing: name your network's class, e.g. "
                         "model.net._target_=mypkg.nets.KWSNet")
    try:
        net = instantiate(_plain(model_cfg["net"]))
    except (InstantiationException, ImportError, TypeError, ValueError, AttributeError) as error:
        reason = " ".join(str(error.__cause__ or error).split())
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise ValueError(f"model.net._target_={target}: cannot be instantiated with arguments {spec['args']} "
                         f"({reason}): check the module is importable (PYTHONPATH) and the model.net.* "
                         "constructor arguments") from None
    if not isinstance(net, nn.Module):
        raise ValueError(f"model.net._target_={target}: builds a {type(net).__name__}, not a torch.nn.Module")
    return net


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict in a weights file: a plain state_dict, or the ``model`` entry of an audiocert checkpoint
    (``audiocert train model=external`` writes one); ValueError in one line naming ``model.weights``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model.weights={path}: no such file: pass the state_dict of your network "
                         "(torch.save(net.state_dict(), PATH)), or train one with `audiocert train model=external ...`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file
        reason = " ".join(str(error).split())[:200]
        raise ValueError(f"model.weights={path}: not a weights-only torch file ({type(error).__name__}: {reason})"
                         ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "config" in state:
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.weights={path}: holds no state_dict (a dict of tensors)")
    return state


def load_weights(net: nn.Module, path: str | Path, target: str) -> None:
    """Load a state_dict into the net, strictly; a state_dict of another shape is refused in one line."""
    state = read_state_dict(path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        reason = " ".join(str(error).split())
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise ValueError(f"model.weights={path}: does not fit model.net._target_={target} ({reason}): pass the "
                         "weights of this network with these model.net.* arguments") from None


def read_classes(classes: Any) -> list[str] | None:
    """``model.classes``: a list of names, or a file of names (one a line); None when not given."""
    classes = _plain(classes)
    if classes is None:
        return None
    if isinstance(classes, str):
        path = Path(classes).expanduser()
        if not path.is_file():
            raise ValueError(f"model.classes={classes}: no such file (give a list [a,b,...] or a file with one class "
                             "name a line)")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = [str(c) for c in classes]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"model.classes={names}: must name each class once")
    return names


def class_order(model_classes: Sequence[str] | None, dataset_classes: Sequence[str]) -> list[int] | None:
    """For each dataset label (in the dataset's order), the index of the model output that names it; None when the
    orders agree. ValueError naming what differs when the two sets of names are not the same."""
    if model_classes is None:
        return None
    model_classes, dataset_classes = [str(c) for c in model_classes], [str(c) for c in dataset_classes]
    missing = [c for c in dataset_classes if c not in model_classes]
    extra = [c for c in model_classes if c not in dataset_classes]
    if missing or extra:
        parts = ([f"the dataset's {missing} are not among model.classes"] if missing else []) + (
            [f"model.classes {extra} are not in the dataset"] if extra else [])
        raise ValueError(f"model.classes does not match the dataset's labels: {'; '.join(parts)}; the model must "
                         "classify exactly the dataset's classes (matched by name)")
    order = [model_classes.index(c) for c in dataset_classes]
    return None if order == list(range(len(order))) else order


class ExternalClassifier(nn.Module):
    """The user's net, its logits reordered to the dataset's labels (``order``: None keeps them)."""

    def __init__(self, net: nn.Module, order: Sequence[int] | None = None) -> None:
        super().__init__()
        self.net = net
        if order is None:
            self.order = None
        else:
            self.register_buffer("order", torch.tensor(list(order), dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return logits if self.order is None else logits.index_select(-1, self.order)


def check_input_stage(input_stage: str, smoothing_stage: str | None) -> None:
    """Smoothing enters at the model's input or before it; a later stage is refused in one line."""
    if input_stage not in INPUTS:
        raise ValueError(f"model.input={input_stage}: must be one of {', '.join(INPUTS)}")
    if smoothing_stage is not None and smoothing_stage in STAGES and \
            STAGES.index(smoothing_stage) > STAGES.index(input_stage):
        raise ValueError(f"representation.stage={smoothing_stage} comes after model.input={input_stage}: the model "
                         f"never sees that stage; smooth at {' or '.join(STAGES[:STAGES.index(input_stage) + 1])}")


class ChainFrontend(nn.Module):
    """The frontend chain up to an external model's input stage: to_stage / from_stage as the full frontend,
    but from_stage stops at ``input_stage`` (no channel dimension added)."""

    def __init__(self, frontend: DeepSpeakerFrontend, input_stage: str) -> None:
        super().__init__()
        check_input_stage(input_stage, None)
        self.frontend, self.input_stage = frontend, input_stage
        self.sample_rate = frontend.sample_rate

    @property
    def stages(self) -> tuple[str, ...]:
        return self.frontend.stages[: self.frontend.stages.index(self.input_stage) + 1]

    def _check(self, stage: str) -> int:
        check_input_stage(self.input_stage, stage)
        return self.frontend.stages.index(stage)

    def to_stage(self, waveform: torch.Tensor, stage: str) -> torch.Tensor:
        self._check(stage)
        return self.frontend.to_stage(waveform, stage)

    def from_stage(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        position, end = self._check(stage), self.frontend.stages.index(self.input_stage)
        for _, step in self.frontend.steps()[position:end]:
            x = step(x)
        return x

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.from_stage(waveform, "waveform")

    def __getattr__(self, name: str) -> Any:  # frame, preemphasize, nfft ... of the full frontend (perceptibility)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("frontend"), name)


def build_external(model_cfg: Mapping[str, Any], frontend: DeepSpeakerFrontend,
                   dataset_classes: Sequence[str] | None, weights: str | Path | None
                   ) -> tuple[ExternalClassifier, ChainFrontend]:
    """The user's classifier (weights loaded when given) and its frontend chain, checked against the dataset's
    class names; every refusal one line naming the override."""
    chain = ChainFrontend(frontend, str(model_cfg.get("input") or "waveform"))
    net = instantiate_net(model_cfg)
    if weights is not None:
        load_weights(net, weights, net_spec(model_cfg)["target"])
    order = class_order(read_classes(model_cfg.get("classes")), dataset_classes) if dataset_classes else None
    return ExternalClassifier(net, order), chain


def external_quantities(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What of an external model enters the config hash: module path, constructor args, input stage, classes."""
    spec = net_spec(model_cfg)
    return {"target": spec["target"], "args": spec["args"], "input": str(model_cfg.get("input") or "waveform"),
            "classes": read_classes(model_cfg.get("classes"))}
