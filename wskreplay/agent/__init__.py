"""The agent protocol (docs/agent-protocol.md) and the reference agent."""
