"""Built-in tools: workspace files, commands and processes, sub-agents."""
