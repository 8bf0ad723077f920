"""certificates.tsv: locuslab/smoothing's certify output, written by the certification reducer and read by
every kind and section that builds on a certification.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    with open(path) as handle:
        return [{"idx": int(r["idx"]), "label": int(r["label"]), "predict": int(r["predict"]),
                 "radius": float(r["radius"]), "correct": bool(int(r["correct"])), "time": float(r["time"])}
                for r in csv.DictReader(handle, delimiter="\t")]


def planned_certificates(certify_dir: str | Path, certify_plan: Mapping[str, Any]) -> dict[int, dict[str, Any]] | None:
    """dataset index -> certificate row (predict, radius, ...) of the reduced certification in ``certify_dir``
    when it is the certification of exactly ``certify_plan``'s config (its config hash) and covers all its points;
    None otherwise (not certified yet, or certified under other settings)."""
    certify_dir = Path(certify_dir)
    try:
        parent = read_plan(certify_dir)
    except (OSError, ValueError):
        return None
    path = certify_dir / "certificates.tsv"
    if parent["config_hash"] != certify_plan["config_hash"] or not path.is_file():
        return None
    rows = {r["idx"]: r for r in read_certificates(path)}
    return rows if all(i in rows for i in certify_plan["examples"]) else None
