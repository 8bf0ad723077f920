"""Checkpoints of base classifiers: plain tensors and JSON-like metadata, loadable with weights_only=True."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audiocert.frontend import DeepSpeakerFrontend
from audiocert.model import ARCHITECTURE, ResCNN
from audiocert.provenance import atomic_write_bytes


def build_model(model_cfg: Mapping[str, Any], num_classes: int) -> ResCNN:
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


def architecture_mismatch(state: Mapping[str, Any]) -> str | None:
    """None when ``state`` was saved by this code's model architecture, else the architecture it holds."""
    label = state.get("architecture")
    return None if label == ARCHITECTURE else (label or "v1 (unlabelled)")


@dataclass
class LoadedClassifier:
    model: ResCNN
    frontend: DeepSpeakerFrontend
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
        state = torch.load(path, map_location=device, weights_only=True)
        config = state["config"]
    except Exception as error:  # torch raises many types for a bad file; the user needs the path
        raise ValueError(f"checkpoint {path} is not an audiocert checkpoint or is corrupt: {error}") from error
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
        raise ValueError(f"checkpoint {path} does not fit the model its config describes: {error}") from error
    frontend = build_frontend(config.get("frontend"))
    return LoadedClassifier(
        model=model.to(device).eval(), frontend=frontend.to(device), config=config,
        metrics=dict(state.get("metrics", {})), speakers=list(state.get("speakers", [])), path=path,
    )
