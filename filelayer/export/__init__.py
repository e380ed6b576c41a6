"""Rendering threads as Markdown and JSON."""
