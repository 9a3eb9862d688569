"""Local models: engines run in this process, under a memory budget."""
