"""The asyncio runtime: lines, the gateway joining line, link and stack, and the service proxy."""
