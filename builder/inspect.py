"""``bundle inspect``: what a bundle claims, for a human at a workstation (not a verification)."""

from __future__ import annotations

from typing import Any

from edgebundle.runtime.bundle import DEFAULT_LIMITS, read_members_unverified
from edgebundle.runtime.manifest import parse_manifest
from edgebundle.runtime.signing import parse_signature_file

_CODES_SHOWN = 40  # characters of a categorical feature's codes in the summary


def inspect_bundle(data: bytes) -> dict[str, Any]:
    """Manifest, member sizes and signing key ids, parsed strictly but NOT verified."""
    members = read_members_unverified(data, DEFAULT_LIMITS)
    manifest = parse_manifest(members["manifest.json"])
    signatures = parse_signature_file(members["manifest.sig"])
    return {
        "verified": False,
        "manifest": manifest.to_dict(),
        "members": {name: len(content) for name, content in members.items()},
        "signatures": [entry.keyid for entry in signatures.signatures],
    }


def format_inspect(doc: dict[str, Any], verified_by: list[str] | None) -> str:
    """``inspect_bundle``'s document as a summary a person reads at a glance: names and
    rounded numbers, never raw JSON. ``verified_by``: the trusted key ids that signed it
    (None: not verified)."""
    m = doc["manifest"]
    source, parity, budget = m["source"], m["parity"], m["parity"]["budget"]
    trees = f"{source['num_trees']:,} trees"
    if source["best_iteration"] is not None:
        trees += f" (best_iteration {source['best_iteration']})"
    features = [_feature(f) for f in m["inputs"]["features"]]
    labels = ""
    if parity["label_agreement"] is not None:
        labels = f", labels {parity['label_agreement']:.2%} (≥ {budget['min_label_agreement']:.1%})"
    rows = [
        ("source", f"{source['objective']}, {trees}, xgboost {source['framework_version']}, "
         f"sha256 {source['sha256'][:12]}…"),
        ("inputs", f"{len(features)} features: " + ", ".join(features)),
        ("outputs", ", ".join(f"{o['name']} ({o['dtype']})" for o in m["outputs"])),
        ("precision", _precision(m)),
        # bundles built before the build section existed have none
        ("chosen", m["build"]["reason"] if "build" in m else "(not recorded)"),
        ("parity", f"max error {parity['max_error']:.3g} (budget {budget['max_error']:.3g})"
         f"{labels} on {parity['rows']:,} check rows: "
         + ("passed" if parity["passed"] else "FAILED")),
        ("requires", f"onnxruntime ≥ {m['requirements']['onnxruntime']}"),
        ("drift", "baseline included (stats.json)" if "stats.json" in m["files"]
         else "no baseline (built without --data)"),
        ("files", ", ".join(f"{n} {f['size']:,} B" for n, f in m["files"].items())),
        ("signed by", ", ".join(k[:16] + "…" for k in doc["signatures"]) or "nobody"),
        ("verified", "not verified (add --trust KEY to verify)" if verified_by is None
         else "yes: signature by a trusted key, every file's sha256 matches"),
    ]  # fmt: skip
    head = f"{m['name']} {m['version']}  ({m['task']}, created {m['created']})"
    return "\n".join([head, *(f"  {label + ':':<11}{text}" for label, text in rows)])


def _precision(m: dict[str, Any]) -> str:
    q = m["quantization"]
    if q is None:
        return "float (lossless tree op)"
    bits = f"{q['leaf_bits']}-bit leaves" + (", escalated from 8" if q["escalated"] else "")
    return f"int8 ({q['layout']} layout, {bits}, margin error bound ±{q['margin_error_bound']:.3g})"


def _feature(feature: dict[str, Any]) -> str:
    """A feature's name; a categorical one's with the codes its splits name (runs, cut short)."""
    if feature["type"] != "c":
        return str(feature["name"])
    codes = str(feature.get("codes", ""))
    if len(codes) > _CODES_SHOWN:
        codes = codes[:_CODES_SHOWN].rsplit(",", 1)[0] + ",…"
    return f"{feature['name']} (categorical{': codes ' + codes if codes else ''})"

