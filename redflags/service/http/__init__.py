"""HTTP plumbing of the service: bodies, limits, errors as OperationOutcome, request logs, the socket."""
