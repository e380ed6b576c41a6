"""Verify, repair and compact an archive."""
