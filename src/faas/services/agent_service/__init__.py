"""Agent service: agents that use tools, memory and RAG through the gateway's chat API."""
