"""Generators of inputs for tests, demos and benchmarks: synthetic traces (``synth``), the
simulated field recording with its ETW and PktMon events (``fieldsim``), and the pacing
benchmark's trace (``pacing_trace``)."""
