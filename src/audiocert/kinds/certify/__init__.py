"""Certification: class counts of f under noise per point, certified by CERTIFY and PREDICT (Cohen et al.)."""

from audiocert.kinds.certify.certificates import (
    CERTIFICATE_COLUMNS,
    certificates_tsv,
    planned_certificates,
    read_certificates,
    trusted_certificates,
)
from audiocert.kinds.certify.counts import (
    CountsAccumulator,
    check_tiling,
    counts_payload,
    make_record,
    merge_counts,
    settled,
)
from audiocert.kinds.certify.kind import CERTIFY, CertifyKind
from audiocert.kinds.certify.plan import (
    COUNTED_PHASES,
    certified_quantities,
    check_certify_config,
    check_plan_consistency,
    config_label,
    make_plan,
    make_shards,
    round_shards,
    select_examples,
    shard_device_type,
)
from audiocert.kinds.certify.reduce import certificate_semantics, radius_grid, reduce_config

__all__ = [
    "CERTIFICATE_COLUMNS", "CERTIFY", "COUNTED_PHASES", "CertifyKind", "CountsAccumulator", "certificate_semantics",
    "certificates_tsv", "certified_quantities", "check_certify_config", "check_plan_consistency", "check_tiling",
    "config_label", "counts_payload", "make_plan", "make_record", "make_shards", "merge_counts",
    "planned_certificates", "radius_grid", "read_certificates", "reduce_config", "round_shards", "select_examples",
    "settled", "shard_device_type", "trusted_certificates",
]
