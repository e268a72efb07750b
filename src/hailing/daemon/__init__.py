"""The hailing daemon (``hailing up``): the node a person keeps running, with its local
control API on 127.0.0.1. See ``docs/daemon.md``.

- :mod:`hailing.daemon.service`: :class:`~hailing.daemon.service.Daemon`, which owns the
  Peer, the links kept open to contacts, the message history and the API;
- :mod:`hailing.daemon.api`: the HTTP + WebSocket API (aiohttp);
- :mod:`hailing.daemon.client`: how CLI commands find and use a running daemon
  (stdlib only, so that the commands stay quick to start).

This package imports nothing heavy itself: import the module you need.
"""
