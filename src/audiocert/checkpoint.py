"""Checkpoints of base classifiers: plain tensors and JSON-like metadata, loadable with weights_only=True.

A trained model's ``best.pt`` holds its weights and what certification reads (architecture, config, metrics,
num_classes, speakers, epoch, code_version); ``last.pt`` adds the optimizer, LR scheduler and RNG states that
resuming training needs (audiocert.training). :func:`load_checkpoint` reads either.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audiocert.external import build_external, instantiate_net, is_external
from audiocert.frontend import DeepSpeakerFrontend
from audiocert.model import ARCHITECTURE, ResCNN
from audiocert.provenance import atomic_write_bytes


def build_model(model_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The network a model config describes: the ResCNN, or a user's network (``model.net``, untrained)."""
    if is_external(model_cfg):
        return instantiate_net(model_cfg)
    return ResCNN(
        num_classes=num_classes, widths=list(model_cfg["widths"]),
        embedding_dim=int(model_cfg.get("embedding_dim", 512)), dropout=float(model_cfg.get("dropout", 0.5)),
        bn_momentum=float(model_cfg.get("bn_momentum", 0.01)),
    )


def build_frontend(frontend_cfg: Mapping[str, Any] | None = None) -> DeepSpeakerFrontend:
    return DeepSpeakerFrontend(**dict(frontend_cfg or {}))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically; it is labelled with this code's model architecture unless it has a label."""
    buffer = io.BytesIO()
    torch.save({"architecture": ARCHITECTURE, **state}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


# How to get a usable checkpoint again, for errors about one that cannot be used.
RETRAIN_HINT = "retrain it with `audiocert train ...` (same dataset= and model=) or pass checkpoint=PATH to another one"


class CorruptCheckpointError(ValueError):
    """A checkpoint file torch cannot read, or whose contents are not a checkpoint; the message names the file."""


def error_reason(error: Exception) -> str:
    """A one-line cause of a failure to load a checkpoint.

    torch's own message for a weights-only failure is a paragraph advising weights_only=False, which is wrong for a
    damaged file (and unsafe), so only its specific part is kept.
    """
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation of torch.load", 1)[0]
    line = " ".join(text.split())  # load_state_dict's message spreads over lines: "Error(s) in ...:\n\tMissing..."
    detail = line if len(line) <= 200 else line[:197] + "..."
    if isinstance(error, EOFError) and not detail:
        detail = "the file ends too early (empty or cut short)"
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def read_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", required: Iterable[str] = ()
) -> dict[str, Any]:
    """The dict in checkpoint ``path`` (loaded with weights_only=True), holding at least the ``required`` keys.

    Raises :class:`CorruptCheckpointError` naming the file when torch cannot read it (truncated, empty, random bytes,
    not weights-only) or it holds no such dict.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types (RuntimeError, EOFError, UnpicklingError...) for a bad file
        raise CorruptCheckpointError(f"{path} is corrupt or not a checkpoint ({error_reason(error)})") from error
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path} is not a checkpoint: it holds a {type(state).__name__}, not a dict")
    if missing := [key for key in required if key not in state]:
        raise CorruptCheckpointError(f"{path} is not a complete checkpoint: it lacks {', '.join(missing)}")
    return state


def set_aside(path: str | Path) -> Path:
    """Rename a corrupt file to ``<name>.corrupt-<timestamp>`` beside it, so that nothing is silently deleted."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
    while target.exists():  # never overwrite an earlier corrupt copy set aside in the same second
        target, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
    return path.rename(target)


def architecture_mismatch(state: Mapping[str, Any]) -> str | None:
    """None when ``state`` was saved by this code's model architecture, else the architecture it holds."""
    label = state.get("architecture")
    return None if label == ARCHITECTURE else (label or "v1 (unlabelled)")


@dataclass
class LoadedClassifier:
    model: nn.Module
    frontend: nn.Module
    config: dict[str, Any]
    metrics: dict[str, Any]
    speakers: list[int]
    path: Path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LoadedClassifier:
    """Load a trained base classifier; a missing or foreign file gets an error naming it and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist: train one with `audiocert train` (same dataset= and model=) "
            "or pass checkpoint=/path/to/best.pt"
        )
    try:
        state = read_checkpoint(path, device, required=("config", "model", "num_classes"))
    except CorruptCheckpointError as error:
        raise CorruptCheckpointError(f"checkpoint {error}: {RETRAIN_HINT}") from error
    config = state["config"]
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"checkpoint {path} holds no config dict: {RETRAIN_HINT}")
    if (other := architecture_mismatch(state)) is not None:
        raise ValueError(
            f"checkpoint {path} holds a {other} model, but this audiocert "
            f"builds {ARCHITECTURE}: its weights would compute a different function. Retrain it with "
            "`audiocert train` (same dataset= and model=)"
        )
    try:
        model = build_model(config["model"], int(state["num_classes"]))
        model.load_state_dict(state["model"])
    except Exception as error:
        raise ValueError(f"checkpoint {path} does not fit the model its config describes ({error}): {RETRAIN_HINT}"
                         ) from error
    frontend = build_frontend(config.get("frontend"))
    return LoadedClassifier(
        model=model.to(device).eval(), frontend=frontend.to(device), config=config,
        metrics=dict(state.get("metrics", {})), speakers=list(state.get("speakers", [])), path=path,
    )


def load_external(path: str | Path, model_cfg: Mapping[str, Any], frontend_cfg: Mapping[str, Any] | None,
                  class_names: list[str] | None, device: torch.device | str = "cpu") -> LoadedClassifier:
    """A user's classifier (``model=external``) with the weights in ``path`` (a state_dict, or the best.pt that
    `audiocert train model=external` wrote), on its frontend chain, its classes matched to ``class_names``."""
    path = Path(path)
    model, chain = build_external(model_cfg, build_frontend(frontend_cfg), class_names, path)
    state: dict[str, Any] = {}
    try:
        candidate = torch.load(path, map_location="cpu", weights_only=True)
        state = candidate if isinstance(candidate, dict) and "config" in candidate else {}
    except Exception:  # build_external read it already: it is a weights-only file
        pass
    return LoadedClassifier(model=model.to(device).eval(), frontend=chain.to(device),
                            config=dict(state.get("config") or {"model": dict(model_cfg)}),
                            metrics=dict(state.get("metrics", {})), speakers=list(state.get("speakers", [])),
                            path=path)


def check_external_model(cfg: Any, weights: bool) -> None:
    """A user's network (model=external) is built here, its weights loaded and its classes matched to the
    dataset's by name, before Hydra writes anything: an unknown class, wrong arguments, weights of another shape or
    other class names end the command in one line naming the override."""
    if not is_external(cfg.get("model")):
        return
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    names = dataset_class_names(resolved["dataset"])
    path = resolved.get("checkpoint") if weights else None
    if path is not None and not Path(path).is_file():
        path = None  # planning names the missing file (and how to train it)
    model, chain = build_external(resolved["model"], build_frontend(resolved.get("frontend")), names, path)
    try_forward(model, chain, resolved)
    if not weights and model.order is not None:
        raise ValueError(f"model.classes={resolved['model']['classes']}: `audiocert train` writes the outputs in the "
                         f"dataset's label order {names}: list model.classes in that order, or drop it")


def dataset_class_names(dataset: dict[str, Any]) -> list[str] | None:
    """The class names of a dataset config without reading audio: a folder dataset's classes, or the listed
    LibriSpeech speakers as text (None: every speaker of the subset, known after the scan)."""
    if dataset.get("layout") == "folder":
        from audiocert.data.folder import class_names

        return class_names(dataset["root"], dataset.get("manifest"), dataset.get("classes"))
    speakers = dataset.get("speakers")
    return None if speakers is None else [str(s) for s in sorted(speakers)]


def try_forward(model: nn.Module, chain: Any, resolved: dict[str, Any]) -> None:
    """One forward pass of two silent crops through the chain and the user's network, before anything is written:
    a network that cannot take its declared input, or gives another number of logits, is refused in one line."""
    dataset, model_cfg = resolved["dataset"], resolved["model"]
    where, classes = str(model_cfg.get("input") or "waveform"), int(dataset["num_classes"])
    waveform = torch.zeros(2, int(dataset["crop_samples"]))
    try:
        with torch.no_grad():
            logits = model.eval()(chain(waveform))
    except Exception as error:  # whatever the user's forward raises: said in one line
        shape = tuple(chain(waveform).shape)
        raise ValueError(f"model.input={where}: model.net._target_={model_cfg['net']['_target_']} fails on a batch "
                         f"of that stage, shape {shape} ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
                         ": check model.input and the network's forward") from None
    if tuple(logits.shape) != (2, classes):
        raise ValueError(f"model.net._target_={model_cfg['net']['_target_']}: returns logits of shape "
                         f"{tuple(logits.shape)} for 2 examples, but the dataset has {classes} classes: set the "
                         "network's number of outputs (a model.net.* argument) to match")
