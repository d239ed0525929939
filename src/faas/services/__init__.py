"""The service catalogue: every service the platform knows, registered in this one place.

Each service declares itself in its own `spec.py` (`ServiceSpec`: name, port, builder, the
services it calls, the backends it uses, its job kinds, public paths and body limits); adding a
service is one line here. Importing this module imports only the specs: a service's own modules
load when it is built.
"""

from __future__ import annotations

from faas.kernel import ServiceRegistry
from faas.services.agent_service.spec import SPEC as AGENT
from faas.services.cache_service.spec import SPEC as CACHE
from faas.services.gateway_service.spec import SPEC as GATEWAY
from faas.services.ingestion_service.spec import SPEC as INGESTION
from faas.services.llmops_service.spec import SPEC as LLMOPS
from faas.services.ml_service.spec import SPEC as ML
from faas.services.prompt_generator_service.spec import SPEC as PROMPT_GENERATOR
from faas.services.prompt_service.spec import SPEC as PROMPT
from faas.services.rag_service.spec import SPEC as RAG
from faas.shared import config

REGISTRY = ServiceRegistry(
    [GATEWAY, CACHE, RAG, AGENT, PROMPT, ML, INGESTION, LLMOPS, PROMPT_GENERATOR]
)

# Views of the registry for code that works service by service (tests, benchmarks, tooling).
SERVICE_NAMES = tuple(REGISTRY.names)
DEFAULT_PORTS = {spec.name: spec.port for spec in REGISTRY}
BUILDERS = {spec.name: spec.build for spec in REGISTRY}


def load_settings(**overrides: object) -> config.Settings:
    """Settings from the environment, checked against the registered services as well."""
    settings = config.load_settings(**overrides)
    REGISTRY.check(settings)
    return settings


def unknown_service(name: str) -> str:
    return REGISTRY.unknown_service(name)
