"""What an agent can call: the tool protocol (base.py), the built-in tools (builtin.py), HTTP
tools behind the agent's allow-list (http.py) and the tools a tenant declares (tenant.py)."""
