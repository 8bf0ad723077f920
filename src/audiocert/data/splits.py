"""Train/test split by utterance, crop selection (:class:`CropDataset`), and :func:`build_datasets`.

Labels are the index of the speaker in the manifest's sorted list of integer speaker IDs. Crops are
never padded: every utterance must be at least one crop long (the scan skips shorter ones).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from audiocert.data.audio import _REFETCH_HINT, PathLike, _file_error, load_audio
from audiocert.data.checks import check_dataset_config
from audiocert.data.layout import _list_for_message
from audiocert.data.manifest import Manifest, Utterance
from audiocert.data.scan import scan_librispeech

__all__ = ["CropDataset", "DataBundle", "build_datasets", "split_utterances"]


def _derive_seed(*parts: Any) -> int:
    """Deterministic 63-bit seed from any parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _utt_sort_key(u: Utterance) -> tuple[int, int, str]:
    return (u.speaker, u.chapter, u.utt_id)


def split_utterances(
    manifest: Manifest, test_fraction: float, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Per-speaker, utterance-disjoint train/test split.

    For each speaker, its utterances are sorted by (chapter, utt_id) (so the result does not depend on
    filesystem order) and shuffled with a RNG seeded from (``seed``, speaker ID), so adding or removing
    a speaker does not change the other speakers' splits. ``round(n * test_fraction)`` utterances go to
    test, clamped so that every speaker has >= 1 test and >= 1 train utterance. A speaker with fewer
    than 2 usable utterances raises ``ValueError`` naming it. Returns ``(train, test)``, each sorted by
    (speaker, chapter, utt_id). Chapters are not kept disjoint (only utterances are).
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise ValueError(f"dataset.test_fraction must be in (0, 1), got {test_fraction!r}")
    train: list[Utterance] = []
    test: list[Utterance] = []
    for spk, utts in sorted(manifest.utterances_by_speaker().items()):
        utts = sorted(utts, key=_utt_sort_key)
        n = len(utts)
        if n < 2:
            raise ValueError(
                f"speaker {spk} has {n} usable utterance(s) in {manifest.subset_dir / str(spk)} "
                f"(utterances shorter than {manifest.min_samples} samples are skipped); the "
                "utterance-disjoint train/test split needs at least 2. Remove the speaker from "
                "dataset.speakers, lower dataset.crop_samples, or add utterances."
            )
        n_test = min(max(1, math.floor(n * float(test_fraction) + 0.5)), n - 1)
        order = list(range(n))
        random.Random(_derive_seed("split", seed, spk)).shuffle(order)
        test_idx = set(order[:n_test])
        for i, u in enumerate(utts):
            (test if i in test_idx else train).append(u)
    return train, test


class CropDataset(Dataset):
    """Fixed-length crops ``(waveform float32 [crop_samples], label int)`` from a list of utterances.

    Order (both modes): **speaker-major**. ``len == num_classes * crops_per_speaker`` and index ``i``
    belongs to speaker ``speakers[i // crops_per_speaker]`` with label ``i // crops_per_speaker``
    (label = index of the speaker in the sorted speaker list).

    * ``mode="train"``: for each speaker, ``crops_per_speaker`` crops per epoch, each from a random
      utterance of that speaker (uniform over its utterances) at a random offset. The plan for the
      whole epoch is drawn from a ``torch.Generator`` seeded from (``seed``, epoch) by
      :meth:`set_epoch` (epoch 0 at construction), so items are reproducible for a given epoch and do
      not depend on access order or worker count. Call ``set_epoch(e)`` before iterating epoch ``e``;
      this works with DataLoader ``num_workers=0`` and with non-persistent workers (workers get a fresh
      copy per epoch), not with ``persistent_workers=True``. Shuffle with the DataLoader.
    * ``mode="test"``: fixed at construction from ``seed``: speaker ``s``'s ``k``-th crop uses its
      utterances in a seeded permutation, cycled (so all test utterances are covered as evenly as
      possible), at a seeded random offset. :meth:`set_epoch` does not change test crops.

    Every utterance must be at least ``crop_samples`` long at ``sample_rate`` (scan with
    ``min_samples=crop_samples``); shorter ones raise :class:`AudioFileError` at construction
    (crops are never padded). Decoded audio is cached in memory in an LRU dict keyed by path
    (``max_cached_files``; None = unbounded, 0 = no caching; ~1 MB per 15 s utterance, per worker).
    Returned waveforms are copies, so in-place augmentation cannot corrupt the cache.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        speakers: Sequence[int],
        crop_samples: int,
        crops_per_speaker: int,
        mode: Literal["train", "test"] = "train",
        *,
        seed: int = 0,
        sample_rate: int = 16000,
        resample: bool = True,
        max_cached_files: int | None = 2048,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        for name, value in (
            ("crop_samples", crop_samples),
            ("crops_per_speaker", crops_per_speaker),
            ("sample_rate", sample_rate),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_cached_files is not None and (not isinstance(max_cached_files, int) or max_cached_files < 0):
            raise ValueError(
                f"max_cached_files must be None or a non-negative integer, got {max_cached_files!r}"
            )
        self.mode = mode
        self.seed = int(seed)
        self.crop_samples = crop_samples
        self.crops_per_speaker = crops_per_speaker
        self.sample_rate = sample_rate
        self.resample = resample
        self.max_cached_files = max_cached_files
        self.speakers: list[int] = sorted(int(s) for s in speakers)
        if len(set(self.speakers)) != len(self.speakers) or not self.speakers:
            raise ValueError(f"speakers must be a non-empty list of distinct IDs, got {list(speakers)!r}")
        label_of = {s: i for i, s in enumerate(self.speakers)}
        unknown = sorted({u.speaker for u in utterances} - set(label_of))
        if unknown:
            raise ValueError(f"utterances of speaker(s) {unknown} not in the speaker list {self.speakers}")
        self.utterances: list[Utterance] = sorted(utterances, key=_utt_sort_key)
        self._by_label: list[list[int]] = [[] for _ in self.speakers]
        lengths = []
        for idx, u in enumerate(self.utterances):
            self._by_label[label_of[u.speaker]].append(idx)
            if u.sample_rate != sample_rate and not resample:
                raise _file_error(
                    u.path,
                    f"sample rate is {u.sample_rate} Hz but {sample_rate} Hz is required "
                    "(dataset.resample=false)",
                    "resample the corpus or set dataset.resample=true",
                )
            n = u.num_samples(sample_rate)
            if n < crop_samples:
                raise _file_error(
                    u.path,
                    f"{n} samples is shorter than a crop ({crop_samples}); crops are never padded",
                    "scan with min_samples=crop_samples so short utterances are skipped",
                )
            lengths.append(n)
        empty = [self.speakers[i] for i, idxs in enumerate(self._by_label) if not idxs]
        if empty:
            raise ValueError(f"{mode} set has no utterances for speaker(s) {empty}")
        self._lengths = torch.tensor(lengths, dtype=torch.int64)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.epoch = 0
        self._plan_utt, self._plan_offset = self._make_plan(0)
        # The name of each label (a speaker ID as text, or a folder dataset's class name): models name classes so.
        self.class_names: list[str] = [str(spk) for spk in self.speakers]

    @property
    def num_classes(self) -> int:
        return len(self.speakers)

    def __len__(self) -> int:
        return self.num_classes * self.crops_per_speaker

    def set_epoch(self, epoch: int) -> None:
        """Redraw the train crops for ``epoch`` (deterministic given seed and epoch); no-op for test."""
        epoch = int(epoch)
        if self.mode == "train" and epoch != self.epoch:
            self._plan_utt, self._plan_offset = self._make_plan(epoch)
        self.epoch = epoch

    def _make_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        cps = self.crops_per_speaker
        stream = ("train-crops", self.seed, epoch) if self.mode == "train" else ("test-crops", self.seed)
        g = torch.Generator().manual_seed(_derive_seed(*stream))
        plan_utt = torch.empty(len(self), dtype=torch.int64)
        plan_off = torch.empty(len(self), dtype=torch.int64)
        for label, idxs in enumerate(self._by_label):
            idxs_t = torch.tensor(idxs, dtype=torch.int64)
            if self.mode == "train":
                choice = torch.randint(len(idxs), (cps,), generator=g)
            else:
                choice = torch.randperm(len(idxs), generator=g)[torch.arange(cps) % len(idxs)]
            utt = idxs_t[choice]
            max_off = self._lengths[utt] - self.crop_samples
            u = torch.rand(cps, generator=g, dtype=torch.float64)
            off = torch.minimum((u * (max_off + 1).to(torch.float64)).to(torch.int64), max_off)
            plan_utt[label * cps : (label + 1) * cps] = utt
            plan_off[label * cps : (label + 1) * cps] = off
        return plan_utt, plan_off

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {self.mode} CropDataset of length {n}")
        return i

    def _load(self, path: str) -> torch.Tensor:
        wav = self._cache.get(path)
        if wav is not None:
            self._cache.move_to_end(path)
            return wav
        wav = load_audio(path, self.sample_rate, self.resample)
        if self.max_cached_files is None or self.max_cached_files > 0:
            self._cache[path] = wav
            if self.max_cached_files is not None:
                while len(self._cache) > self.max_cached_files:
                    self._cache.popitem(last=False)
        return wav

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._index(i)
        utt = self.utterances[int(self._plan_utt[i])]
        wav = self._load(utt.path)
        if wav.numel() < self.crop_samples:
            raise _file_error(
                utt.path,
                f"decodes to {wav.numel()} samples but its header promised "
                f"{utt.num_samples(self.sample_rate)} (crop is {self.crop_samples})",
                _REFETCH_HINT,
            )
        off = min(int(self._plan_offset[i]), wav.numel() - self.crop_samples)
        return wav[off : off + self.crop_samples].clone(), i // self.crops_per_speaker

    def describe(self, i: int) -> dict[str, Any]:
        """Provenance of item ``i``: path, offset (samples at ``sample_rate``), speaker, label, ..."""
        i = self._index(i)
        utt = self.utterances[int(self._plan_utt[i])]
        label = i // self.crops_per_speaker
        return {
            "index": i,
            "mode": self.mode,
            "epoch": self.epoch if self.mode == "train" else None,
            "path": utt.path,
            "utt_id": utt.utt_id,
            "offset": int(self._plan_offset[i]),
            "crop_samples": self.crop_samples,
            "sample_rate": self.sample_rate,
            "speaker": self.speakers[label],
            "label": label,
        }

    def __repr__(self) -> str:
        return (
            f"CropDataset(mode={self.mode!r}, speakers={self.num_classes}, "
            f"utterances={len(self.utterances)}, "
            f"crops_per_speaker={self.crops_per_speaker}, crop_samples={self.crop_samples}, seed={self.seed})"
        )


@dataclass
class DataBundle:
    """What :func:`build_datasets` returns. ``speakers[label]`` is the speaker ID of a label."""

    train: CropDataset
    test: CropDataset
    speakers: list[int]
    manifest: Manifest
    train_utterances: list[Utterance] = field(default_factory=list)
    test_utterances: list[Utterance] = field(default_factory=list)
    class_names: list[str] | None = None  # a folder dataset's class names (label order); None: the speaker IDs
    fingerprint: str | None = None  # a folder dataset's listing digest (paths, sizes, mtimes)

    @property
    def num_classes(self) -> int:
        return len(self.speakers)


def build_datasets(cfg: Mapping[str, Any], cache_dir: PathLike | None | Literal[False] = None) -> DataBundle:
    """Scan + split + train/test :class:`CropDataset` from a dataset config (DictConfig or Mapping).

    Keys: ``root`` (the LibriSpeech dir; required), ``subset`` (default train-clean-360), ``speakers``
    (list of int IDs or null = all), ``num_classes`` (required; must equal the number of speakers
    found), ``sample_rate`` (16000), ``crop_samples`` (required), ``test_fraction`` (0.2),
    ``train_crops_per_speaker`` (300), ``test_crops_per_speaker`` (50), ``split_seed`` (0; also seeds
    the crops), ``resample`` (true). Impossible values raise ``ValueError`` naming ``dataset.<field>``
    and the value (see :func:`audiocert.data.checks.check_dataset_config`). Utterances shorter than
    ``crop_samples`` are skipped (see :func:`scan_librispeech`). ``cache_dir`` is passed to
    :func:`scan_librispeech`.
    """
    s = check_dataset_config(cfg)
    if s.layout == "folder":
        return build_folder_datasets(s, cache_dir)
    manifest = scan_librispeech(
        s.root,
        s.subset,
        s.speakers,
        cache_dir=cache_dir,
        min_samples=s.crop_samples,
        sample_rate=s.sample_rate,
        resample=s.resample,
    )
    if len(manifest.speakers) != s.num_classes:
        raise ValueError(
            f"dataset.num_classes={s.num_classes} but {len(manifest.speakers)} speakers were found in "
            f"{manifest.subset_dir} ({_list_for_message(manifest.speakers, 20)}). Set dataset.num_classes="
            f"{len(manifest.speakers)}, or list the wanted speakers in dataset.speakers."
        )
    train_utts, test_utts = split_utterances(manifest, s.test_fraction, s.split_seed)
    common = dict(crop_samples=s.crop_samples, seed=s.split_seed, sample_rate=s.sample_rate, resample=s.resample)
    train = CropDataset(
        train_utts, manifest.speakers, crops_per_speaker=s.train_crops_per_speaker, mode="train", **common
    )
    test = CropDataset(test_utts, manifest.speakers, crops_per_speaker=s.test_crops_per_speaker, mode="test", **common)
    return DataBundle(
        train=train,
        test=test,
        speakers=list(manifest.speakers),
        manifest=manifest,
        train_utterances=train_utts,
        test_utterances=test_utts,
    )


class SilenceCheckedCrops(CropDataset):
    """The crops of a folder dataset: a file whose samples are all zero is refused when read, naming it (a silent
    file in a user's corpus is a broken export; its crops would certify silence)."""

    def _load(self, path: str) -> torch.Tensor:
        wav = super()._load(path)
        if not bool(wav.abs().max() > 0):
            raise _file_error(path, "is silent (every sample is zero)", "replace it or remove it from the dataset")
        return wav


def build_folder_datasets(s: Any, cache_dir: PathLike | None | Literal[False] = None) -> DataBundle:
    """:func:`build_datasets` of a folder dataset (``dataset.layout=folder``: a class-per-folder tree or a
    manifest); see :mod:`audiocert.data.folder`."""
    from audiocert.data.folder import manifest_split, scan_folder
    from audiocert.data.headers import _post_scan_checks

    scan = scan_folder(s.root, s.manifest, s.classes, sample_rate=s.sample_rate, min_samples=s.crop_samples,
                       cache_dir=cache_dir)
    _post_scan_checks(scan.manifest, s.resample)
    if len(scan.class_names) != s.num_classes:
        raise ValueError(f"dataset.num_classes={s.num_classes} but {len(scan.class_names)} classes were found "
                         f"({_list_for_message(scan.class_names, 20)}): drop the dataset.num_classes override")
    if scan.splits:
        train_utts, test_utts = manifest_split(scan)
    else:
        train_utts, test_utts = split_utterances(scan.manifest, s.test_fraction, s.split_seed)
    common = dict(crop_samples=s.crop_samples, seed=s.split_seed, sample_rate=s.sample_rate, resample=s.resample)
    labels = scan.manifest.speakers
    train = SilenceCheckedCrops(train_utts, labels, crops_per_speaker=s.train_crops_per_speaker, mode="train",
                                **common)
    test = SilenceCheckedCrops(test_utts, labels, crops_per_speaker=s.test_crops_per_speaker, mode="test", **common)
    train.class_names = test.class_names = list(scan.class_names)
    return DataBundle(train=train, test=test, speakers=list(labels), manifest=scan.manifest,
                      train_utterances=train_utts, test_utterances=test_utts, class_names=list(scan.class_names),
                      fingerprint=scan.fingerprint)
