"""Versions of the instrumented libraries this bridge is tested against (OTel contrib style)."""

_instruments_client = ("httpx >= 0.18.0", "httpx2 >= 2.0.0")
_instruments_proxy = ("litellm >= 1.74",)

# Either HTTP library is enough: OpenAI SDK 1.x/2.x use httpx, 3.x uses httpx2.
_instruments: tuple[str, ...] = ()
_instruments_any = _instruments_client
