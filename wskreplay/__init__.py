"""wskreplay: record, replay and diff the WskSendEx calls of Windows kernel network drivers."""

__version__ = "0.1.0"
