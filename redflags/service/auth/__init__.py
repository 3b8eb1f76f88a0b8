"""Who calls the service: CDS clients by signed JWT, integration engines by bearer token, and their tenant."""
