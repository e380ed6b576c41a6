"""The archive format v1: ids, layout, manifest, users, the step journal and the codec."""
