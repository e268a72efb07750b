"""Can this machine run the lab? ``natlab_available()`` answers once per process.

It needs Linux, root, ``ip`` (iproute2) with network namespaces, ``tcpdump`` and an
iptables whose rules load inside a namespace. Debian's ``iptables`` is the nf_tables
backend (iptables-nft); where that does not work in a namespace (an old kernel without
nf_tables), the legacy backend is tried. ``HAILING_NATLAB_IPTABLES=iptables-legacy`` (or
``iptables-nft``) forces one. The probe builds a throwaway namespace and loads the
address-restricted and symmetric rules (DNAT, SNAT, ``recent``, conntrack,
``--random-fully``), so a missing kernel module shows up here and not inside a test.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from .netns import CommandError, delete_namespaces, ip_batch
from .rules import router_rules

__all__ = ["iptables_restore", "natlab_available"]

_BACKENDS = ("iptables-nft", "iptables-legacy", "iptables")


def natlab_available() -> tuple[bool, str]:
    """``(True, "<iptables backend>")`` when the lab can run here, else ``(False, why)``
    with a one-line reason (what is missing and how to get it)."""
    return _probe()


def iptables_restore() -> str:
    """The ``iptables-restore`` program of the backend that works here (after
    :func:`natlab_available` said yes)."""
    ok, backend = _probe()
    if not ok:
        raise RuntimeError(f"the NAT lab is not available: {backend}")
    return backend + "-restore"


@functools.cache
def _probe() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"the NAT lab needs Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, "the NAT lab needs root (network namespaces, iptables): run as root"
    missing = [tool for tool in ("ip", "tcpdump") if shutil.which(tool) is None]
    forced = os.environ.get("HAILING_NATLAB_IPTABLES", "").strip()
    backends = [forced] if forced else [b for b in _BACKENDS if shutil.which(b + "-restore")]
    if not backends or shutil.which(backends[0] + "-restore") is None:
        missing.append("iptables")
    if missing:
        return False, (f"the NAT lab needs {', '.join(missing)}: "
                       "run scripts/install-natlab.sh as root")
    ns = f"hl-{os.getpid()}-probe"
    try:
        ip_batch([f"netns add {ns}"])
    except CommandError as e:
        return False, f"cannot create a network namespace here: {e}".splitlines()[0]
    try:
        errors = []
        for backend in backends:
            why = _try_backend(ns, backend)
            if why is None:
                return True, backend
            errors.append(f"{backend}: {why}")
        return False, "no iptables backend works in a namespace (" + "; ".join(errors) + ")"
    finally:
        delete_namespaces([ns])


def _try_backend(ns: str, backend: str) -> str | None:
    for kind in ("address-restricted", "symmetric"):
        rules = router_rules(kind, wan="198.18.0.2", lan="198.19.1.0/24", host="198.19.1.2")
        proc = subprocess.run(["ip", "netns", "exec", ns, backend + "-restore"], input=rules,
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            return (proc.stderr.strip() or f"exit status {proc.returncode}").splitlines()[0]
    return None
