"""Building blocks shared by several rules (red-flags.md 0.2), each derived once.

- ``any_leg_weakness``: leg weakness, paraplegia/paraparesis, hemiparesis, or an MRC grade
  of 4 or less in a lower-limb muscle group (latest per group and side).
- ``bilateral_<finding>``: a record saying bilateral, or a left and a right record (13.2).
- ``fvc_per_kg``: latest FVC (24 h) in mL / latest body weight (30 days) in kg.
"""

from __future__ import annotations

from durable.lang import m

from engine.dsl import DAY, HOUR, Rules, latest, present, ref

META = None  # derives facts only; raises no alert

PARAMS: dict[str, float] = {
    "mrc_weak_max": 4,  # MRC grade at or below which a muscle group counts as weak
    "fvc_within_h": 24,
    "weight_within_d": 30,
}

#: Findings whose bilateral form some rule needs.
BILATERAL = ("leg_weakness", "sciatica", "leg_numbness", "facial_weakness", "arm_weakness")


def define(r: Rules, p: dict[str, float]) -> None:
    for key in ("leg_weakness", "paraplegia_paraparesis", "hemiparesis"):
        r.derive("any_leg_weakness", present(key))
    weak_mrc = (latest("mrc_grade") <= p["mrc_weak_max"]).where(lambda _p: m.limb == "leg", "in a leg group")
    r.derive("any_leg_weakness", weak_mrc, text="MRC grade {v:g}")

    for key in BILATERAL:
        r.derive(f"bilateral_{key}", present(key).where(lambda _p: m.side == "bilateral", "on both sides"))
        r.derive(
            f"bilateral_{key}",
            present(key).where(lambda _p: m.side == "left", "on the left"),
            present(key).where(lambda _p: m.side == "right", "on the right"),
            side=lambda _f: "bilateral",
        )
    # MRC weakness on both legs is bilateral leg weakness too.
    r.derive(
        "bilateral_leg_weakness",
        weak_mrc.where(lambda _p: m.side == "left", "on the left"),
        weak_mrc.where(lambda _p: m.side == "right", "on the right"),
        side=lambda _f: "bilateral",
    )
    r.derive(
        "fvc_per_kg",
        latest("fvc", p["fvc_within_h"] * HOUR),
        latest("body_weight", p["weight_within_d"] * DAY).where(lambda _p: m.v > 0, "(weight > 0)"),
        value=lambda f: f[0]["v"] / f[1]["v"],
        text="FVC {v:.1f} mL/kg",
    )


__all__ = ["BILATERAL", "META", "PARAMS", "define", "ref"]
