"""Torch-free facts both sides share: exit statuses and the one-line error types (train/ and report/ import this,
never each other)."""
