"""Signaling: everything that carries an offer or an answer from one node to another.

Modules: :mod:`~hailing.signaling.envelope` (the one sealed format for everything sensitive
that leaves a node); the others (compact SDP, rendezvous backends) sit beside it.
"""
