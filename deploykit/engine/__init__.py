"""The engine: playbooks to specs, plan, the one flow, the graph executor. Knows no resource type."""
