"""audiocert: certified robustness of audio classifiers with Gaussian randomized smoothing."""

from audiocert.attacks import PGDResult, smoothed_pgd
from audiocert.data.folder import register_folder_resolver
from audiocert.frontend import DeepSpeakerFrontend
from audiocert.model import ResCNN
from audiocert.provenance import register_resolvers
from audiocert.sampler import Smooth, StagedClassifier, smoothed_speaker_classifier
from audiocert.stages import STAGE_REGISTRY, STAGES, Stage, WaveformBound

register_resolvers()  # conf/ uses ${safe_name:...}
register_folder_resolver()  # conf/dataset/folder.yaml counts its classes: ${dataset_classes:...}

__version__ = "0.1.0"
__all__ = ["STAGES", "STAGE_REGISTRY", "DeepSpeakerFrontend", "PGDResult", "ResCNN", "Smooth", "Stage",
           "StagedClassifier", "WaveformBound", "smoothed_pgd", "smoothed_speaker_classifier"]
