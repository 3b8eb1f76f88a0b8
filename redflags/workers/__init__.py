"""A pool of child processes that run module-level functions, with restarts and per-call deadlines."""
