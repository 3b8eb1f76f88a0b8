"""The twelve red flags by public id, in the order of docs/rules/README.md: what tests hold the rules to."""

REFERENCE_RULES: tuple[str, ...] = (
    "cauda_equina_syndrome",
    "guillain_barre_syndrome",
    "acute_stroke_or_tia",
    "spinal_cord_compression",
    "deep_vein_thrombosis",
    "myasthenic_crisis_risk",
    "hypokalemic_or_electrolyte_weakness",
    "b12_deficiency_neuropathy",
    "peripheral_artery_disease",
    "alcoholic_myopathy",
    "lyme_neuroborreliosis",
    "rhabdomyolysis",
)
