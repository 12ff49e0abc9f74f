"""Workspaces: the agent that serves one workspace directory over HTTP, its client, the
provisioners that make workspaces and run their agents, and the manager tying them to the store."""
