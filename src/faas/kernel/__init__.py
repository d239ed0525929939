"""The kernel: how services are declared (`ServiceSpec`), registered (`ServiceRegistry`), built
from the platform's shared resources (`Platform`) and call each other (`ApiClient`)."""

from faas.kernel.clients import ApiClient, ServiceClients
from faas.kernel.registry import ServiceRegistry
from faas.kernel.spec import Platform, ServiceSpec

__all__ = ["ApiClient", "Platform", "ServiceClients", "ServiceRegistry", "ServiceSpec"]
