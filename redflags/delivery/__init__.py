"""Delivery of the outbox to the FHIR server: the sender, the service's loop, the CLI's round."""
