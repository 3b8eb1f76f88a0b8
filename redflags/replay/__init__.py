"""Offline batch replay: files to patients, per file or partitioned over processes; progress; corpus checks."""
