"""asyncio listeners, connections, group commit and the daemon's lifecycle."""
