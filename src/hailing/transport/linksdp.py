"""Opening a link by an offer and an answer, whatever carries them (couplers use this).

A coupler moves two SDP texts between two nodes; everything else is here::

    offer = await LinkOffer.create(driver)         # offerer: offer.sdp goes to the peer
    answer = await LinkAnswer.create(driver, sdp)   # answerer: answer.sdp goes back;
                                                    #   the link is adopted when it opens
    link = await offer.finish(answer_sdp, peer_id=target_id)   # offerer: the open link

The SDP texts carry the ICE candidates (aiortc gathers them before it returns a
description), so one message each way is enough. A malformed SDP text raises
:class:`~hailing.errors.SdpError`; a link that does not open within ``timeout`` raises
:class:`~hailing.errors.QueryTimeout`; either way the peer connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ..errors import QueryTimeout, SdpError
from .links import CLOSE_TIMEOUT

if TYPE_CHECKING:
    from .datachannel import LinkDriver
    from .links import Link

__all__ = ["LinkAnswer", "LinkOffer"]

#: The data channel's label (datachannel.LABEL; repeated: no import cycle).
_LABEL = "hailing-dht"
#: Largest SDP text taken from a peer.
MAX_SDP = 16384


def _description(sdp: object, kind: str) -> Any:
    """The RTCSessionDescription of a peer's text, parsed once here: aiortc's parser
    raises anything on garbage (AssertionError, ValueError...), this raises SdpError."""
    from aiortc import RTCSessionDescription
    from aiortc.sdp import SessionDescription

    if (type(sdp) is not str or not sdp.startswith("v=0") or len(sdp) > MAX_SDP
            or "m=application" not in sdp):
        raise SdpError(f"not an SDP {kind} with a data channel")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        raise SdpError(f"unusable SDP {kind}: {type(exc).__name__}") from None
    if not any(m.kind == "application" and m.sctp_port for m in parsed.media):
        raise SdpError(f"an SDP {kind} without a data channel")
    return RTCSessionDescription(sdp=sdp, type=kind)


async def _close(pc: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await pc.close()


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


async def _opened(channel: Any) -> None:
    if channel.readyState == "open":
        return
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    channel.on("open", lambda: _settle(fut, None))
    if channel.readyState != "open":
        await fut


class LinkOffer:
    """The offering side of a link being opened."""

    def __init__(self, driver: LinkDriver, pc: Any, channel: Any) -> None:
        self.driver = driver
        self.pc = pc
        self.channel = channel
        #: The offer to send to the peer (candidates included).
        self.sdp: str = pc.localDescription.sdp

    @classmethod
    async def create(cls, driver: LinkDriver) -> LinkOffer:
        pc = await driver.new_peer_connection()
        try:
            channel = pc.createDataChannel(_LABEL)
            await pc.setLocalDescription(await pc.createOffer())
        except BaseException:
            await _close(pc)
            raise
        return cls(driver, pc, channel)

    async def finish(self, answer_sdp: str, *, peer_id: bytes | None = None,
                     pinned: bool = False, timeout: float = 30.0) -> Link:
        """Take the peer's answer; the link once its channel is open (adopted)."""
        try:
            description = _description(answer_sdp, "answer")
            await self.pc.setRemoteDescription(description)
            async with asyncio.timeout(timeout):
                await _opened(self.channel)
        except TimeoutError:
            await _close(self.pc)
            raise QueryTimeout("the link did not open") from None
        except SdpError:
            await _close(self.pc)
            raise
        except (ValueError, TypeError, AttributeError, IndexError, AssertionError) as exc:
            await _close(self.pc)
            raise SdpError(f"unusable SDP answer: {exc}") from None
        except BaseException:
            await _close(self.pc)
            raise
        return self.driver.adopt(self.pc, self.channel, peer_id=peer_id, pinned=pinned)

    async def cancel(self) -> None:
        await _close(self.pc)


class LinkAnswer:
    """The answering side: :attr:`sdp` goes back to the offerer; the link is adopted by
    the driver as soon as it opens (:meth:`link` waits for it)."""

    def __init__(self, pc: Any, task: asyncio.Task[Link]) -> None:
        self.pc = pc
        self._task = task
        #: The answer to send back (candidates included).
        self.sdp: str = pc.localDescription.sdp

    @classmethod
    async def create(cls, driver: LinkDriver, offer_sdp: str, *, peer_id: bytes | None = None,
                     pinned: bool = False, timeout: float = 30.0) -> LinkAnswer:
        description = _description(offer_sdp, "offer")
        pc = await driver.new_peer_connection(answering=True)
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pc.on("datachannel", lambda ch: _settle(got, ch) if ch.label == _LABEL else None)
        try:
            await pc.setRemoteDescription(description)
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException as exc:
            await _close(pc)
            if isinstance(exc, (ValueError, TypeError, AttributeError, IndexError,
                                AssertionError)):
                raise SdpError(f"unusable SDP offer: {exc}") from None
            raise

        async def adopt() -> Link:
            try:
                async with asyncio.timeout(timeout):
                    channel = await got
                    await _opened(channel)
            except TimeoutError:
                await _close(pc)
                raise QueryTimeout("the link did not open") from None
            except BaseException:
                await _close(pc)
                raise
            return driver.adopt(pc, channel, peer_id=peer_id, pinned=pinned)

        task = driver._spawn(adopt())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
        return cls(pc, task)

    async def link(self) -> Link:
        """The link, once open (raises QueryTimeout if it never opened)."""
        return await asyncio.shield(self._task)

    async def cancel(self) -> None:
        self._task.cancel()
        await _close(self.pc)
