"""Sharing an archive through git: the merge driver, the setup and hooks, resolving a
stopped merge, consistent snapshots."""
