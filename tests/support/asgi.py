"""Looking inside a faas app's middleware stack."""

from __future__ import annotations

from faas.shared.asgi_app import FaasAPI
from faas.shared.direct_routes import DirectRoutes


def stack_layers(app: FaasAPI) -> list[object]:
    """The layers a request goes through, outermost first, down to the router."""
    layer: object = app.middleware_stack or app.build_middleware_stack()
    layers = [layer]
    while hasattr(layer, "app") and layer is not app.router:
        layer = layer.app
        layers.append(layer)
    return layers


def served_directly(app: FaasAPI) -> DirectRoutes:
    """The app's direct-route layer (a test failure if it has none)."""
    found = [layer for layer in stack_layers(app) if isinstance(layer, DirectRoutes)]
    assert len(found) == 1, f"expected one DirectRoutes layer: {stack_layers(app)}"
    return found[0]
