"""A deterministic synthetic multi-speaker speech corpus, written in the LibriSpeech layout.

This is audiocert's embedded default data set: it lets every pipeline (training, certification, the tests)
run with no download. Modules, each one job (``writer`` imports ``synthesis``, never the reverse)::

    synthesis  the synthetic speakers' voices (voice_parameters, Voice) and one utterance's audio
               (synthesize_utterance): a source-filter synthesizer, deterministic in (seed, speaker, utterance)
    writer     the corpus on disk: FLAC files, transcripts, SPEAKERS.TXT and the completion marker in the
               LibriSpeech layout (generate_corpus), atomic, resumable, refusing foreign directories
"""

from audiocert.corpus.synthesis import Voice, synthesize_utterance, voice_parameters
from audiocert.corpus.writer import CORPUS_VERSION, MARKER_NAME, CorpusMismatchError, generate_corpus

__all__ = [
    "CORPUS_VERSION",
    "MARKER_NAME",
    "CorpusMismatchError",
    "Voice",
    "generate_corpus",
    "synthesize_utterance",
    "voice_parameters",
]
