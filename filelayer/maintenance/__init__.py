"""Verify, repair and compact an archive; prune it and erase users from it."""
