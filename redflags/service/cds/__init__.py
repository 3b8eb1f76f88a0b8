"""CDS Hooks 2.0: discovery, service calls (prefetch, cards) and feedback."""
