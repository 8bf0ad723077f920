"""A user's own audio classifiers, outside audiocert: certify them with `model=external`.

    model.net._target_=usernets.KWSNet       (waveform in; log-mel features computed inside with torchaudio)
    model.net._target_=usernets.WaveformNet  (waveform in; strided 1-D convolutions on the samples)
"""

from usernets.kws import KWSNet
from usernets.wave import WaveformNet

__all__ = ["KWSNet", "WaveformNet"]
