"""The Hydra configs of audiocert, installed as the package ``audiocert.conf`` (see pyproject.toml).

This directory is their only copy: a wheel carries its ``*.yaml`` files, an editable install maps the package onto it.
"""
