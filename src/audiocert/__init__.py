"""audiocert: certified robustness of audio classifiers with Gaussian randomized smoothing."""

from audiocert.frontend import STAGES, DeepSpeakerFrontend
from audiocert.model import ResCNN
from audiocert.provenance import register_resolvers
from audiocert.sampler import Smooth, StagedClassifier, smoothed_speaker_classifier

register_resolvers()  # conf/ uses ${safe_name:...}

__version__ = "0.1.0"
__all__ = ["STAGES", "DeepSpeakerFrontend", "ResCNN", "Smooth", "StagedClassifier", "smoothed_speaker_classifier"]
