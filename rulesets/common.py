"""Building blocks shared by several rules (docs/clinical-policy.md#building-blocks), each derived once.

- ``any_leg_weakness``: leg weakness, paraplegia/paraparesis, hemiparesis, or an MRC grade
  of 4 or less in a lower-limb muscle group (latest per group and side).
- ``bilateral_<finding>``: a record saying bilateral, or a left and a right record (13.2); its
  value is the seconds since it began on those sides (``_began``).
- ``fvc_per_kg``: latest FVC (24 h) in mL / latest body weight (30 days) in kg.
- ``resp_fvc_fall``: by how many percent the latest FVC (24 h) lies below an earlier FVC; one
  fact per earlier result, its ``age`` that of the earlier result, so each rule chooses its own
  episode window and cut-off (``fact("resp_fvc_fall", episode) >= 30``; Lawn 2001).
- ``resp_mip_abs``: magnitude of the latest MIP (24 h) in cmH2O; "MIP weaker than -30 cmH2O"
  is ``fact("resp_mip_abs") < 30`` whichever sign convention the device writes.
- ``known_cancer``: any cancer or bone-metastasis record that is not refuted or entered in
  error; resolved and in remission still count (spinal metastases appear years later, 4.3).
- ``active_cancer``: a current cancer Condition (Wells "active cancer", 5.2).
- ``weakness_ascending``: arm, face or bulbar weakness that began after the leg weakness (0.2 b).
- ``weakness_progression`` (0.2): an MRC grade of the same muscle group and side fell by 1 or
  more between two results at least 6 h apart; or the weakness ascended; or leg weakness was
  later replaced by paraplegia/paraparesis. Its ``ts`` is the newest evidence, so a rule can
  ask "progressed within Δ" or "after the injury".
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, Rules, ever, fact, has_number, latest, m, present, ref, result
from rulesets.meta import ParamRange

#: The engine reads this module attribute (policy shared by every rule; every configuration of
#: the engine includes this module): a preliminary result supports only these severities.
from rulesets.policy import PRELIMINARY_SUPPORTS

META = None  # derives facts only; raises no alert

PARAMS: dict[str, float] = {
    "mrc_weak_max": 4,  # MRC grade at or below which a muscle group counts as weak
    "fvc_within_h": 24,
    "weight_within_d": 30,
    "mip_within_h": 24,  # latest MIP within this many hours
    "progression_gap_h": 6,  # two MRC grades at least this far apart ...
    "progression_drop": 1,  # ... that fell by at least this much
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "mrc_weak_max": ParamRange(
        "MRC grade", 3, 4, "0.2: MRC 4 = weak against resistance; below 3 would miss real weakness"
    ),
    "fvc_within_h": ParamRange(
        "h", 1, 72, "0.2: an FVC older than 3 days does not describe today's breathing"
    ),
    "weight_within_d": ParamRange(
        "d", 1, 365, "0.2: body weight for mL/kg; a year-old weight is still usable, none is not"
    ),
    "mip_within_h": ParamRange("h", 1, 72, "0.2: as FVC"),
    "progression_gap_h": ParamRange(
        "h", 1, 72, "0.2 progression: two grades at least hours apart, within an episode"
    ),
    "progression_drop": ParamRange(
        "MRC grades", 1, 3, "0.2: a fall of at least one grade; 0 would call any repeat progression"
    ),
}

#: Regions that weaken after the legs in an ascending pattern (legs -> arms -> face/bulbar).
ASCENDING = ("arm_weakness", "facial_weakness", "dysphagia")
CANCER = ("cancer_any", "bone_mets")

#: Findings whose bilateral form some rule needs.
BILATERAL = ("leg_weakness", "sciatica", "leg_numbness", "facial_weakness", "arm_weakness")


def _began(facts: list[dict]) -> float:
    """Seconds since the bilateral finding began: the earliest onset on the sides it is made of
    (a record saying "both sides" dates from the first such record, not from an older record of
    one side only: an old foot drop does not make a new weakness of both legs old)."""
    ages = [f.get("side_onset_age", f.get("onset_age", -1)) for f in facts]
    return float(max(a for a in ages if isinstance(a, int | float)))


def define(r: Rules, p: dict[str, float]) -> None:
    for key in ("leg_weakness", "paraplegia_paraparesis", "hemiparesis"):
        r.derive("any_leg_weakness", present(key))
    weak_mrc = (latest("mrc_grade") <= p["mrc_weak_max"]).where(m.limb == "leg", "in a leg group")
    r.derive("any_leg_weakness", weak_mrc, text="MRC grade {v:g}")

    for key in BILATERAL:
        r.derive(
            f"bilateral_{key}",
            present(key).on("bilateral"),
            value=_began,
        )
        r.derive(
            f"bilateral_{key}",
            present(key).on("left"),
            present(key).on("right"),
            side=lambda _f: "bilateral",
            value=_began,
        )
    # MRC weakness on both legs is bilateral leg weakness too.
    r.derive(
        "bilateral_leg_weakness",
        weak_mrc.on("left"),
        weak_mrc.on("right"),
        side=lambda _f: "bilateral",
        value=_began,
    )
    # a volume is never negative: ">= 0" also drops a result that carries no number
    fvc = latest("fvc", p["fvc_within_h"] * HOUR).where(m.v >= 0, "with a value")
    r.derive(
        "fvc_per_kg",
        fvc,
        latest("body_weight", p["weight_within_d"] * DAY).where(m.v > 0, "(weight > 0)"),
        value=lambda f: f[0]["v"] / f[1]["v"],
        text="FVC {v:.1f} mL/kg",
    )
    # Respiratory red flags shared by guillain_barre_syndrome and myasthenic_crisis_risk.
    r.derive(
        "resp_fvc_fall",
        result("fvc").where(m.v > 0, "(> 0)").named("earlier"),
        fvc.where(m.ts > ref("earlier").ts, "taken after it"),
        value=lambda f: 100 * (1 - f[1]["v"] / f[0]["v"]),
        text="FVC fell {v:.0f} %",
    )
    r.derive(
        "resp_mip_abs",
        latest("mip", p["mip_within_h"] * HOUR).where(has_number(m.v), "with a value"),
        value=lambda f: abs(f[0]["v"]),
        text="MIP magnitude {v:g} cmH2O",
    )

    for key in CANCER:
        r.derive("known_cancer", ever(key))
    r.derive("active_cancer", present("cancer_any"))

    # Only facts that carry what the comparison reads can take part (an undated Condition, an MRC
    # grade without a muscle group or a number cannot show a change); filtered before pairing.
    gap, drop = p["progression_gap_h"] * HOUR, p["progression_drop"]
    r.derive(
        "weakness_progression",
        result("mrc_grade").where((m.site != "") & (m.v >= 0), "of a muscle group").named("before"),
        result("mrc_grade").where(
            (
                (m.site == ref("before").site)
                & (m.side == ref("before").side)
                & (m.ts >= ref("before").ts + gap)
                & (m.v <= ref("before").v - drop)
            ),
            f"fallen by {drop:g} grade or more in the same muscle group and side "
            f"at least {p['progression_gap_h']:g} h later",
        ),
        text="MRC grade fell",
    )
    for key in ASCENDING:
        r.derive(
            "weakness_ascending",
            fact("any_leg_weakness").where(m.onset >= 0, "dated"),
            present(key).where(m.onset > ref("any_leg_weakness").onset, "begun after the leg weakness"),
            text="weakness ascending",
        )
    r.derive("weakness_progression", fact("weakness_ascending"))
    r.derive(
        "weakness_progression",
        present("leg_weakness").where(m.onset >= 0, "dated"),
        present("paraplegia_paraparesis").where(
            m.onset > ref("leg_weakness").onset, "recorded after the leg weakness began"
        ),
        text="leg weakness progressed to paraplegia/paraparesis",
    )


__all__ = ["BILATERAL", "META", "PARAMS", "PRELIMINARY_SUPPORTS", "define"]
