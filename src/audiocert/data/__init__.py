"""Dataset layer: LibriSpeech-layout corpora -> fixed-length speaker-labelled crops.

Used both for the real LibriSpeech ``train-clean-360`` (921 speakers, ~100k FLAC files) and for the
synthetic corpus that ``audiocert corpus`` writes in the same layout::

    <root>/SPEAKERS.TXT            (optional; ';' comments, rows ID | SEX | SUBSET | MINUTES | NAME)
    <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   (not used: speaker ID needs no text)

``root`` is the ``LibriSpeech`` directory itself.

Pipeline (see :func:`build_datasets`)::

    check_dataset_config -> DatasetSettings  (config values checked before any I/O)
    scan_librispeech     -> Manifest         (header-only scan, cached as JSON)
    split_utterances     -> train / test     (per speaker, seeded, utterance-disjoint)
    CropDataset          -> (waveform[crop_samples] float32, label int)

Modules, each one job; a module imports only those above it (``checks`` imports none of them)::

    audio           reading one audio file (soundfile), mono / sample-rate checks, AudioFileError, AudioDataWarning
    manifest        Manifest, Utterance, SpeakerInfo (and the manifest's JSON form), SPEAKERS.TXT
    layout          the LibriSpeech directory layout: root, subset, speaker and chapter directories, its errors
    cache_trust     the walk of a full scan and what a trusted scan cache records and checks
    manifest_cache  the scan cache: where it lives, its key, reading and writing
    headers         file headers -> Manifest (bad, short and off-rate files)
    scan            the LibriSpeech layout scan (scan_librispeech) -> Manifest
    checks          validation of the dataset config values
    splits          train/test split by utterance, crop selection (CropDataset), build_datasets

Decisions (each is repeated where it is implemented):

* **Multi-channel files are refused**, never down-mixed: speaker corpora are mono, so a stereo file
  means the wrong file (or a broken conversion) and averaging channels would hide that.
* **Wrong sample rate**: resampled with ``torchaudio.functional.resample`` when ``resample=True``
  (a warning per file, plus one summary warning at scan time), refused with :class:`AudioFileError`
  when ``resample=False``.
* **Utterances shorter than a crop are skipped**, not padded: padding would add artificial silence
  that the frontend would see (and that a certifier would then certify). One warning gives the count
  and an example path.
* **Bad files are errors, not silently dropped**: unreadable/corrupt, empty, multi-channel, NaN/inf
  samples -> :class:`AudioFileError` naming the file and what to do.
* Labels are the index of the speaker in the manifest's sorted list of integer speaker IDs.
"""

from audiocert.data.audio import AudioDataWarning, AudioFileError, load_audio
from audiocert.data.layout import DatasetLayoutError, DatasetNotFoundError
from audiocert.data.manifest import Manifest, SpeakerInfo, Utterance, read_speakers_txt
from audiocert.data.manifest_cache import default_cache_dir
from audiocert.data.scan import scan_librispeech
from audiocert.data.splits import CropDataset, DataBundle, build_datasets, split_utterances

__all__ = [
    "AudioDataWarning",
    "AudioFileError",
    "CropDataset",
    "DataBundle",
    "DatasetLayoutError",
    "DatasetNotFoundError",
    "Manifest",
    "SpeakerInfo",
    "Utterance",
    "build_datasets",
    "default_cache_dir",
    "load_audio",
    "read_speakers_txt",
    "scan_librispeech",
    "split_utterances",
]
