"""The ML service: builds its use cases (datasets, training jobs, the registry, serving,
KServe V2, batch prediction, drift monitoring) and registers its job kinds."""

from __future__ import annotations

from opentelemetry import metrics

from faas.jobs import JobQueue
from faas.services.ml_service.batch_predictions import BATCH_JOB, BatchPredictions
from faas.services.ml_service.datasets import Datasets
from faas.services.ml_service.instruments import PredictionInstruments
from faas.services.ml_service.kserve import KServeV2
from faas.services.ml_service.monitoring import DriftMonitor
from faas.services.ml_service.registry import ModelRegistry
from faas.services.ml_service.serving import ModelServer
from faas.services.ml_service.training_jobs import TRAIN_JOB, TrainingJobs
from faas.shared.config import Settings
from faas.shared.database import Database


class MLService:
    name = "ml"

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        jobs: JobQueue,
        meter: metrics.Meter | None = None,
    ) -> None:
        self.root = settings.data_dir / "ml"
        self.max_upload_bytes = settings.max_upload_bytes
        instruments = PredictionInstruments(meter or metrics.get_meter("faas.ml"))
        self.datasets = Datasets(db, self.root)
        self.registry = ModelRegistry(db, self.root)
        self.monitor = DriftMonitor(self.registry)
        self.server = ModelServer(self.registry, self.monitor, instruments)
        self.kserve = KServeV2(self.registry, self.server)
        self.training = TrainingJobs(jobs, self.datasets, self.registry, self.root)
        self.batch = BatchPredictions(
            jobs, self.datasets, self.registry, self.server, instruments, self.root
        )
        jobs.registry.register(TRAIN_JOB, self.training.run)
        jobs.registry.register(BATCH_JOB, self.batch.run)

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        self.server.unload_all()
