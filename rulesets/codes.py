"""Codes that several rules' CarePlan actions share: one spelling of each (docs/rules/README.md)."""

from __future__ import annotations

from rulesets.meta import CVX, LOINC, RXNORM, SNOMED, Code

APHERESIS = Code(SNOMED, "127788007", "Apheresis")
ASPIRIN = Code(RXNORM, "1191", "Aspirin")
CREATINE_KINASE = Code(LOINC, "2157-6", "Creatine kinase [Enzymatic activity/volume] in Serum or Plasma")
CSF_CELL_COUNT = Code(LOINC, "806-0", "Leukocytes [#/volume] in Cerebral spinal fluid by Manual count")
CSF_PROTEIN = Code(LOINC, "2880-3", "Protein [Mass/volume] in Cerebral spinal fluid")
CT_HEAD = Code(LOINC, "30799-1", "CT Head WO contrast")
ECG = Code(SNOMED, "29303009", "Electrocardiographic procedure")
ENOXAPARIN = Code(RXNORM, "67108", "Enoxaparin")
FVC = Code(LOINC, "19870-5", "Forced vital capacity [Volume] Respiratory system")
ICU_REFERRAL = Code(SNOMED, "306258004", "Referral to intensive care specialist")
IVIG = Code(CVX, "87", "immune globulin, intravenous")
IV_THERAPY = Code(SNOMED, "386340006", "Intravenous therapy")
LUMBAR_PUNCTURE = Code(SNOMED, "277762005", "Lumbar puncture")
MAGNESIUM = Code(LOINC, "2601-3", "Magnesium [Moles/volume] in Serum or Plasma")
MRI_SPINE = Code(LOINC, "36531-2", "MR Spine WO contrast")
NEUROLOGY_REFERRAL = Code(SNOMED, "308474002", "Referral to neurologist")
NEUROSURGERY_REFERRAL = Code(SNOMED, "308482002", "Referral to neurosurgeon")
POTASSIUM = Code(LOINC, "2823-3", "Potassium [Moles/volume] in Serum or Plasma")
RESPIRATORY_FUNCTION = Code(SNOMED, "23426006", "Measurement of respiratory function")
SPINAL_DECOMPRESSION = Code(SNOMED, "10836008", "Decompression of spinal cord")
ULTRASOUND = Code(SNOMED, "16310003", "Diagnostic ultrasonography")
