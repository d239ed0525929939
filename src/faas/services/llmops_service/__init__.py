"""LLMOps: usage operations (from gateway events and external callers), hourly rollups,
metrics, cost analysis and a self-contained dashboard."""
