"""Turning sources (captures, ETW) into traces."""
