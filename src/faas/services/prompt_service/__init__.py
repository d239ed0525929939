"""Prompt service: versioned Jinja2 prompt templates with movable labels, sandboxed rendering
and context-window management."""
