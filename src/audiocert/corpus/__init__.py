"""A deterministic synthetic multi-speaker speech corpus, written in the LibriSpeech layout.

This is audiocert's embedded default data set: it lets every pipeline (training, certification, the tests)
run with no download. Modules, each one job (each imports only those above it)::

    voices     the synthetic speakers' voices (voice_parameters, Voice), with "pitch twins"
    phones     the phone inventory and one utterance's content plan (phones, durations, words)
    tracks     the control tracks of a plan (formant targets, source amplitudes, intonation)
    source     the f0 contour and the glottal source
    filtering  STFT-domain time-varying filtering and the formant resonators
    synthesis  one utterance's audio (synthesize_utterance): a source-filter synthesizer, deterministic in
               (seed, speaker, utterance)
    writer     the corpus on disk: FLAC files, transcripts, SPEAKERS.TXT and the completion marker in the
               LibriSpeech layout (generate_corpus), atomic, resumable, refusing foreign directories
"""

from audiocert.corpus.synthesis import synthesize_utterance
from audiocert.corpus.voices import Voice, voice_parameters
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
