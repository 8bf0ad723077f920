"""The schemas in Hydra's ConfigStore, under the names of Hydra's "Structured Config schema" tutorial:
``base_<command>`` for a command's config, ``<group>/base_<group>`` for a group's (``launcher/base_<name>`` for
each launcher).

They are not named in the defaults lists of conf/: Hydra would then merge each YAML file into its schema, which
turns integers into floats where the schema says float (certify.sequential.growth: 2 would become 2.0), orders
keys as the schema does and adds its defaults; the resolved config would change, and with it plan.json and the
config hash of every earlier plan. Each config is checked against them as composed instead
(audiocert.schemas.compose, audiocert.schemas.commands.check_config).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from audiocert.schemas.attack import AttackSchema
from audiocert.schemas.certify import CertifySchema, LoggerSchema
from audiocert.schemas.commands import COMMAND_SCHEMAS
from audiocert.schemas.data import (
    DatasetSchema,
    FrontendSchema,
    ModelSchema,
    PathsSchema,
    RepresentationSchema,
    SmoothingSchema,
)
from audiocert.schemas.launcher import DebugLauncherSchema, LocalLauncherSchema, SlurmLauncherSchema
from audiocert.schemas.perceptibility import PerceptibilitySchema

# Each config group of conf/ and its schema.
GROUP_SCHEMAS: dict[str, type] = {
    "paths": PathsSchema, "dataset": DatasetSchema, "model": ModelSchema, "frontend": FrontendSchema,
    "representation": RepresentationSchema, "smoothing": SmoothingSchema, "certify": CertifySchema,
    "logger": LoggerSchema, "attack": AttackSchema, "perceptibility": PerceptibilitySchema,
}
LAUNCHER_SCHEMAS: dict[str, type] = {"debug": DebugLauncherSchema, "local": LocalLauncherSchema,
                                     "slurm": SlurmLauncherSchema}


def store_schemas() -> None:
    """Register every schema with Hydra's ConfigStore (again: storing is idempotent)."""
    store = ConfigStore.instance()
    for command, schema in COMMAND_SCHEMAS.items():
        store.store(name=f"base_{command}", node=schema, provider="audiocert")
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"base_{group}", node=schema, provider="audiocert")
    for name, schema in LAUNCHER_SCHEMAS.items():
        store.store(group="launcher", name=f"base_{name}", node=schema, provider="audiocert")
