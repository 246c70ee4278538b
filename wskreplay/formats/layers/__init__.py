"""Decoding captured frames down to TCP, through every link layer and tunnel we read
(see :mod:`.walk` for how, :mod:`.decode` for the entry point)."""
