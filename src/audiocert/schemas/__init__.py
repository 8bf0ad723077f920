"""Typed schemas of the Hydra configs: one dataclass per config group (conf/<group>/) and one per command's config
(conf/<command>.yaml), whose fields carry their ranges and whose ``rules`` the rules between fields.

Every command composes its configs and checks them here before Hydra runs anything (audiocert.cli): a refused
setting ends the command in one line, exit status 1, with nothing written::

    audiocert certify: smoothing.sigma=inf: must be finite and > 0

The checks of the library (check_certify_config, check_train_config, check_launcher_config, check_dataset_config,
check_attack_settings, perceptibility_settings) are these schemas too, so a config is refused the same way
wherever it is read. Only rules that need data stay elsewhere (a dataset root's contents, a checkpoint's config).

Modules (each imports only those above it)::

    rules           the rule vocabulary (Number, Choice, Name, ...), the refusal format, the walk (check_section)
    data            paths/, dataset/, model/, frontend/, representation/, smoothing/
    certify         certify/ (with its sequential and shard sections), logger/, the sweep section
    launcher        launcher/: one schema per launcher name
    train           the train section of conf/train.yaml
    attack          attack/, and the size of an attack's noise stream
    perceptibility  perceptibility/, and what it asks of the dataset
    commands        each command's config (its groups and top-level settings), check_config
    compose         a command's configs composed as Hydra will, before it runs them
    store           the schemas in Hydra's ConfigStore (base_<command>, <group>/base_<group>)
"""

from audiocert.schemas.commands import COMMAND_SCHEMAS, check_config
from audiocert.schemas.rules import SettingError, check_section

__all__ = ["COMMAND_SCHEMAS", "SettingError", "check_config", "check_section"]
