"""A JSON-RPC endpoint over the embedded chain, so several processes share one dev chain.

eth-tester has no HTTP server. :class:`RpcServer` is a minimal one (aiohttp): it takes
JSON-RPC 2.0 requests (single or batched) for the methods web3 and hailing use
(:data:`METHODS`), hands each to the embedded chain's web3 provider through its
eth-tester middleware (which turns RPC-formatted parameters into eth-tester's), and
encodes the result the JSON-RPC way (quantities as ``0x`` hex, bytes as ``0x`` data).
Every transaction is mined into its own block at once (eth-tester's automine).

Requests are remote input: a body that is not JSON is a -32700 error, a malformed request
-32600, a method outside :data:`METHODS` -32601, bad parameters or a failing call -32000
(3 with "execution reverted" for a revert), always one line, never a crash. py-evm is not
thread-safe: all calls run in one worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from ..errors import HailingError
from .embedded import EmbeddedChain

__all__ = ["MAX_BATCH", "MAX_BODY", "METHODS", "RpcServer", "to_rpc"]

METHODS = frozenset({
    "eth_chainId", "eth_blockNumber", "eth_getLogs", "eth_sendRawTransaction",
    "eth_getTransactionReceipt", "eth_getTransactionCount", "eth_gasPrice",
    "eth_maxPriorityFeePerGas", "eth_estimateGas", "eth_call", "eth_getCode",
    "eth_getBalance", "net_version", "eth_feeHistory", "eth_getBlockByNumber",
    "eth_getTransactionByHash", "eth_accounts", "web3_clientVersion",
})
MAX_BODY = 1 << 20
MAX_BATCH = 100


def to_rpc(value: Any) -> Any:
    """eth-tester's Python result as JSON-RPC: ints as hex quantities, bytes as hex data."""
    if isinstance(value, bool | float | str) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_rpc(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_rpc(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__} as JSON-RPC")


def _error(ident: Any, code: int, message: str) -> dict[str, Any]:
    text = " ".join(message.split())[:300] or "error"
    return {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": text}}


class RpcServer:
    """Serve ``chain`` (an :class:`EmbeddedChain`) at ``http://host:port/``."""

    def __init__(self, chain: EmbeddedChain) -> None:
        self.chain = chain
        self.requests = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hailing-evm")
        web3 = chain.web3
        self._request = web3.provider.request_func(web3, web3.middleware_onion)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str, port: int) -> str:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise HailingError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        addresses = self._runner.addresses
        bound = int(addresses[0][1]) if addresses else port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}"
        return self.url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
            parsed: Any = json.loads(body)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(_error(None, -32600, "request too large"), status=413)
        except (ValueError, UnicodeDecodeError):
            return web.json_response(_error(None, -32700, "parse error: not JSON"))
        if isinstance(parsed, list):
            if not parsed or len(parsed) > MAX_BATCH:
                return web.json_response(_error(None, -32600, f"a batch holds 1-{MAX_BATCH}"))
            return web.json_response([await self._one(item) for item in parsed])
        return web.json_response(await self._one(parsed))

    async def _one(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict):
            return _error(None, -32600, "invalid request: not an object")
        ident = req.get("id")
        if not isinstance(ident, int | str | None) or isinstance(ident, bool):
            return _error(None, -32600, "invalid request: bad id")
        method, params = req.get("method"), req.get("params", [])
        if not isinstance(method, str):
            return _error(ident, -32600, "invalid request: no method")
        if method not in METHODS:
            return _error(ident, -32601, f"method not found: {method[:64]}")
        if not isinstance(params, list):
            return _error(ident, -32602, "invalid params: not a list")
        self.requests += 1
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(self._pool, self._call, method, params)
        except Exception as exc:  # eth-tester/web3 raise many types on bad params and reverts
            message = str(exc) or type(exc).__name__
            return _error(ident, 3 if "revert" in message else -32000, message)
        if "error" in answer:
            err = answer["error"]
            msg = err.get("message", "error") if isinstance(err, dict) else str(err)
            return _error(ident, -32000, str(msg))
        return {"jsonrpc": "2.0", "id": ident, "result": answer["result"]}

    def _call(self, method: str, params: list[Any]) -> dict[str, Any]:
        response = self._request(method, params)
        if "error" in response:
            return {"error": response["error"]}
        return {"result": to_rpc(response.get("result"))}
