"""Where a replay sends its calls: the emulator (virtual time), a real socket, an agent."""
