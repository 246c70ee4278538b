"""What reading one capture may take, apart from the machinery that reads it: the command
line shows these as its defaults without importing the capture decoders."""

MAX_CONNECTIONS = 100_000
"""Connections one capture may hold (``--max-connections``): reassembly keeps about 11 KB
per connection, so a capture of millions of tiny connections would need tens of GB."""
