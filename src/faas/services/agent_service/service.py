"""The agent service: agents and tenant tools, runs (now, as jobs, in chat sessions), long-term
memory and workflows. This facade builds one object per use case; the routes call them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faas.backends.kv import KeyValueStore
from faas.integrations.events import EventPublisher
from faas.jobs import JobQueue
from faas.services.agent_service.access import GeneratorPermissions
from faas.services.agent_service.agents import AgentCatalog
from faas.services.agent_service.execution import JOB_KIND, AgentExecution
from faas.services.agent_service.mcp_catalog import McpCatalog
from faas.services.agent_service.mcp_server import FaasMcpServer
from faas.services.agent_service.mcp_servers import HeaderSeal, McpServers
from faas.services.agent_service.mcp_tools import McpToolSource
from faas.services.agent_service.memory import LongTermMemory
from faas.services.agent_service.runner import AgentRunner
from faas.services.agent_service.runs import RunLog
from faas.services.agent_service.sessions import LOCK_WAIT_S, ChatSessions
from faas.services.agent_service.tool_catalog import ToolCatalog
from faas.services.agent_service.workflows import Workflows
from faas.services.gateway_service.client import GatewayClient
from faas.services.prompt_service.client import PromptClient
from faas.shared.auth import signing_secret
from faas.shared.database import Database

if TYPE_CHECKING:
    from faas.kernel import Platform


class AgentService:
    name = "agent"

    def __init__(
        self,
        *,
        db: Database,
        kv: KeyValueStore,
        events: EventPublisher,
        jobs: JobQueue,
        runtime: Platform,
        http_allowlist: list[str],
        session_lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.clients = runtime.clients
        gateway = GatewayClient(self.clients)
        prompt = PromptClient(self.clients, cache_ttl_s=runtime.settings.prompt_client_cache_ttl_s)
        access = GeneratorPermissions(self.clients)
        self.runner = AgentRunner(gateway, runtime.tracer)
        seal = HeaderSeal(lambda: signing_secret(runtime.settings))
        self.mcp_servers = McpServers(db, seal, http_allowlist)
        mcp_tools = McpToolSource(self.mcp_servers, http_allowlist)
        self.tools = ToolCatalog(db, access, http_allowlist, mcp_tools)
        self.agents = AgentCatalog(db, access, gateway, self.tools)
        self.memory = LongTermMemory(db, self.agents, gateway)
        self.runs = RunLog(db, events, self.agents)
        self.execution = AgentExecution(
            agents=self.agents,
            tools=self.tools,
            access=access,
            memory=self.memory,
            runs=self.runs,
            runner=self.runner,
            prompt=prompt,
            jobs=jobs,
            clients=self.clients,
            http_allowlist=http_allowlist,
            service_identity=runtime.service_identity,
        )
        self.sessions = ChatSessions(
            db=db,
            kv=kv,
            agents=self.agents,
            execution=self.execution,
            prompt=prompt,
            lock_wait_s=session_lock_wait_s,
        )
        self.workflows = Workflows(self.execution)
        catalog = McpCatalog(self.clients, self.execution, self.tools, access, http_allowlist)
        self.mcp = FaasMcpServer(catalog)
        jobs.registry.register(JOB_KIND, self.execution.run_job)

    async def start(self) -> None:
        await self.mcp.start()

    async def stop(self) -> None:
        await self.mcp.stop()
