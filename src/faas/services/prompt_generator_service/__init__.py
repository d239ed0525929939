"""Prompt Generator service: agents and tools from natural-language prompts."""
