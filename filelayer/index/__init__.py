"""The derived, rebuildable SQLite index behind ``list_threads``."""
