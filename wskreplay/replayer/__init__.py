"""Replaying traces: the WSK send path model, transport profiles, targets."""
