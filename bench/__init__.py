"""Benchmarks: synthetic FHIR patients and the replay throughput/memory benchmark."""
