"""``POST /fhir/$evaluate``: integration engines push FHIR and get Flags and CarePlans back."""
