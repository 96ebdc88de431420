"""W3C baggage through the bridge's codec, and the process's propagator from the environment.

Both tiers replace OpenTelemetry's ``baggage`` propagator with a subclass of
:class:`BaggagePropagator`: the client's decides which members go to which origin, the
proxy's which inbound members it accepts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.util._importlib_metadata import entry_points

from otel_bridge._context import LANGFUSE_BAGGAGE_PREFIX, format_baggage, parse_baggage


class BaggagePropagator(TextMapPropagator):
    """W3C ``baggage`` with the codec's limits; ``langfuse_*`` members never leave by default.

    Inbound members under ``refused_prefixes`` are dropped on extraction.
    """

    _HEADER = "baggage"

    def __init__(self, refused_prefixes: tuple[str, ...] = ()) -> None:
        self.refused_prefixes = refused_prefixes

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        if context is None:
            context = otel_context.get_current()
        try:
            members, _ = parse_baggage(getter.get(carrier, self._HEADER))
        except Exception:  # a carrier the getter cannot read is no baggage, never an error
            return context
        for key, value in members:
            if not key.startswith(self.refused_prefixes):
                context = otel_baggage.set_baggage(key, value, context)
        return context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        header = format_baggage(self.outbound(otel_baggage.get_all(context), context))
        if header:
            setter.set(carrier, self._HEADER, header)

    def outbound(
        self, entries: Mapping[str, object], context: Context | None
    ) -> Iterable[tuple[str, str]]:
        """The members sent for ``context``, most important first (limits cut from the end)."""
        withheld = (LANGFUSE_BAGGAGE_PREFIX, *self.refused_prefixes)
        return [(key, str(value)) for key, value in entries.items() if not key.startswith(withheld)]

    @property
    def fields(self) -> set[str]:
        return {self._HEADER}


def textmap_from_env(baggage: TextMapPropagator) -> TextMapPropagator:
    """``OTEL_PROPAGATORS`` as configured, with ``baggage`` served by the bridge's propagator.

    It is added when the list has none: the bridge's context travels in baggage.
    """
    names = [
        name.strip()
        for name in os.environ.get("OTEL_PROPAGATORS", "tracecontext,baggage").split(",")
        if name.strip() and name.strip() != "none"
    ]
    propagators: list[TextMapPropagator] = []
    for name in names:
        if name == "baggage":
            propagators.append(baggage)
            continue
        found = list(entry_points(group="opentelemetry_propagator", name=name))
        if not found:
            raise ValueError(
                f"OTEL_PROPAGATORS names {name!r}, which no installed package provides"
            )
        propagators.append(found[0].load()())
    if "baggage" not in names:
        propagators.append(baggage)
    return CompositePropagator(propagators)
