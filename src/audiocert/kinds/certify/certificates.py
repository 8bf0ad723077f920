"""certificates.tsv: locuslab/smoothing's certify output, written by the certification reducer and read by
every kind and section that builds on a certification.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiocert.provenance import CorruptFileError, read_json, seal_problem
from audiocert.shards import read_plan

CERTIFICATION = "certify"  # the kind whose results these are (the name in its plans)
CERTIFICATE_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")


def certificates_tsv(rows: list[dict[str, Any]]) -> str:
    """locuslab/smoothing's certify output: idx label predict radius correct time (radius unrounded)."""
    out = io.StringIO()
    out.write("\t".join(CERTIFICATE_COLUMNS) + "\n")
    for row in rows:
        out.write(f"{row['idx']}\t{row['label']}\t{row['predict']}\t{row['radius']!r}\t{int(row['correct'])}\t"
                  f"{row['time']:.4f}\n")
    return out.getvalue()


def read_certificates(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a certificates.tsv as written, unchecked (see :func:`trusted_certificates`)."""
    with open(path) as handle:
        return parse_certificates(handle.read())


def parse_certificates(text: str) -> list[dict[str, Any]]:
    return [{"idx": int(r["idx"]), "label": int(r["label"]), "predict": int(r["predict"]),
             "radius": float(r["radius"]), "correct": bool(int(r["correct"])), "time": float(r["time"])}
            for r in csv.DictReader(io.StringIO(text), delimiter="\t")]


def certificates_digest(text: str) -> str:
    """What a certification's sealed summary.json records of its certificates.tsv."""
    return hashlib.sha256(text.encode()).hexdigest()


def trusted_certificates(config_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a reduced certification's certificates.tsv, once checked against the digest its sealed
    summary.json records: an edited or damaged file (or summary) is refused with CorruptFileError naming the file
    and the command that rebuilds both from the sealed shards."""
    config_dir = Path(config_dir)
    path, summary_path = config_dir / "certificates.tsv", config_dir / "summary.json"
    recover = f"run `audiocert reduce {config_dir}` to rebuild it from the sealed shard files"
    summary = read_json(summary_path, recover=recover)
    if problem := seal_problem(summary):
        raise CorruptFileError(f"{summary_path} cannot be trusted ({problem}): {recover}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{path} is unreadable ({error.__class__.__name__}): {recover}") from None
    if certificates_digest(text) != summary.get("certificates_sha256"):
        raise CorruptFileError(f"{path} does not match the digest its summary.json records (edited or damaged): "
                               f"{recover}")
    try:
        return parse_certificates(text)
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptFileError(f"{path} is not a certificates table ({error}): {recover}") from None


def planned_certificates(certify_dir: str | Path, certify_plan: Mapping[str, Any]) -> dict[int, dict[str, Any]] | None:
    """dataset index -> certificate row (predict, radius, ...) of the reduced certification in ``certify_dir``
    when it is the certification of exactly ``certify_plan``'s config (its config hash) and covers all its points;
    None otherwise (not certified yet, or certified under other settings). An edited or damaged certificates.tsv
    is refused (see :func:`trusted_certificates`), never used."""
    certify_dir = Path(certify_dir)
    try:
        parent = read_plan(certify_dir)
    except (OSError, ValueError):
        return None
    path = certify_dir / "certificates.tsv"
    if parent["config_hash"] != certify_plan["config_hash"] or not path.is_file():
        return None
    rows = {r["idx"]: r for r in trusted_certificates(certify_dir)}
    return rows if all(i in rows for i in certify_plan["examples"]) else None
