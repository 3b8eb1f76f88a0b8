"""Offline batch replay: files to patients, per file or over processes; progress; corpus checks."""
