"""Deprecated path of the agent protocol's wire, kept for one release: the codec is now
:mod:`wskreplay.formats.agentwire`, below both the replayer and the agent; the event
conversions live with their users (``wskreplay.agent.server.event_to_wire``,
``wskreplay.replayer.targets.agent.event_from_wire``)."""

from wskreplay._moved import forwarder

__getattr__ = forwarder(
    __name__,
    "wskreplay.formats.agentwire",
    {
        "event_to_wire": "wskreplay.agent.server",
        "event_from_wire": "wskreplay.replayer.targets.agent",
    },
)
