"""Bytes in, bytes out: file formats and protocol constants, with no policy of their own."""
