"""Getting a dataset ready before training or certifying: generate the synthetic corpus when it is missing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def ensure_dataset(dataset_cfg: Mapping[str, Any], progress: bool = True) -> Path:
    """Return the LibriSpeech root of ``dataset_cfg``; a synthetic dataset (with ``generate``) is written first.

    Real LibriSpeech is never downloaded (no network on clusters or here): the loader explains how to get it.
    """
    root = Path(str(dataset_cfg["root"]))
    generate = dataset_cfg.get("generate")
    if generate:
        from audiocert.corpus import generate_corpus  # scipy.signal (0.4 s to import): only for a synthetic dataset

        if root.name != "LibriSpeech":
            raise ValueError(f"dataset.root={root} of a synthetic dataset must end in /LibriSpeech")
        marker = root / ".audiocert-corpus.json"
        if not marker.is_file():
            log.info("generating the synthetic corpus %s under %s", dataset_cfg.get("name"), root.parent)
        generate_corpus(root.parent, progress=progress, **dict(generate))
    return root
