"""Where the embedding model runs: torch (sentence-transformers as is), ONNX Runtime (float32 or
int8) or OpenVINO, chosen by the embedding auditors' `backend` option.

- `auto` (the default): torch on a GPU; on a CPU OpenVINO, which on this project's 2-core box
  encodes 2.5-3.6x faster than torch (load-dependent) at a mean cosine of 0.99999 to float32 torch (it runs
  in bfloat16 where the CPU has AMX / AVX-512 BF16, float32 elsewhere). Measured in
  bench/embed_bench.py --backends; figures in docs/auditors/embeddings-and-diversity.md.
- `onnx`: the transformer exported to ONNX, run by ONNX Runtime in float32 (same vectors as torch).
- `onnx-int8`: that export with its MatMul weights quantised to int8 (dynamic, per channel).
- `openvino`: the same ONNX export, compiled by OpenVINO for the CPU.

Why not sentence-transformers' own `backend="onnx"/"openvino"`: they load through optimum-onnx
(which requires transformers < 4.58) and optimum-intel (transformers < 5.6, torchvision, a newer
torch), and this project runs transformers 5 with torch pinned. So the export is torch's own
`torch.onnx.export` of the model's transformer, and only that part moves: the tokeniser and the
later modules (pooling, normalisation) stay the sentence-transformers model's own, so any model
whose first module is a sentence-transformers `Transformer` works, with its own pooling.

The export happens once per model, into `<workspace>/cache/models/<model key>/` (written under a
temporary name and renamed, so an interrupted export leaves nothing half-written); nothing is
downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from assay.core.errors import AssayError

BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "openvino")
BACKEND_HELP = ("where the embedding model runs: auto (torch on a GPU, else openvino, the fastest on CPU at the "
                "same vectors), torch, onnx (ONNX Runtime, float32), onnx-int8 (int8 weights; mean cosine ~0.995 "
                "to torch) or openvino. Embeddings are cached per model and backend")
# the packages a backend needs beyond torch: (import name, pip name)
PACKAGES = {"onnx": [("onnxruntime", "onnxruntime")],
            "onnx-int8": [("onnxruntime", "onnxruntime"), ("onnx", "onnx")],
            "openvino": [("openvino", "openvino")]}
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_backend(backend: object, auditor: str) -> None:
    """An AssayError naming `auditor` and the value unless `backend` is one of BACKENDS."""
    if backend not in BACKENDS:
        raise AssayError(f"{auditor}: backend must be one of {', '.join(BACKENDS)}, not {backend!r}")


def gpu_present() -> bool:
    """Whether torch sees a GPU. Without a GPU device node there is none, and torch (2 s to import)
    is not asked: a fully cached audit then never imports it."""
    if not any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(backend: str | None) -> str:
    """The backend that will run: `auto` decided for this machine; an explicit backend whose package
    is not installed is an AssayError naming the package."""
    backend = backend or "auto"
    check_backend(backend, "embeddings")
    if backend == "auto":
        if gpu_present():
            return "torch"
        return "openvino" if importlib.util.find_spec("openvino") else "torch"
    for module, package in PACKAGES.get(backend, []):
        if importlib.util.find_spec(module) is None:
            raise AssayError(f"embedding backend {backend!r} needs the {package} package, which is not installed "
                             f"(pip install {package}); or choose backend=torch")
    return backend


def backend_tag(backend: str) -> str:
    """The resolved backend as the cache names it; OpenVINO's tag carries the precision it computes
    in on this CPU (bfloat16 vectors are not float32 ones)."""
    if backend != "openvino":
        return backend
    import openvino

    caps = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "openvino-bf16" if "BF16" in caps else "openvino-f32"


class ExportedEncoder:
    """A sentence-transformers model whose transformer runs as an ONNX graph (ONNX Runtime or
    OpenVINO); it encodes like `SentenceTransformer.encode` with normalised float32 output."""

    def __init__(self, st_model, backend: str, folder: Path):
        self.st = st_model
        self.backend = backend
        self.device = "cpu"
        self.max_seq_length = st_model.max_seq_length
        first = st_model[0]
        if not hasattr(first, "auto_model") or not hasattr(first, "tokenizer"):
            raise AssayError(f"backend {backend}: the model's first module is {type(first).__name__}, "
                             "not a sentence-transformers Transformer")
        self.later = [st_model[i] for i in range(1, len(st_model))]
        # sentence-transformers 6 renamed tokenize to preprocess (the old name warns)
        self._tokenize = getattr(st_model, "preprocess", None) or st_model.tokenize
        onnx_path = export_onnx(st_model, folder)
        if backend == "onnx-int8":
            onnx_path = quantize_int8(onnx_path)
        self.precision = "int8" if backend == "onnx-int8" else "float32"
        if backend == "openvino":
            import openvino

            # THROUGHPUT: several CPU streams, each running a batch, so a few batches are in flight
            # at once; on the 2-core box 1.1-1.35x the default one-stream LATENCY mode, same vectors
            compiled = openvino.Core().compile_model(str(onnx_path), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
            self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
            self.inputs = [i.get_any_name() for i in compiled.inputs]
            self.in_flight = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            queue = openvino.AsyncInferQueue(compiled, self.in_flight)
            self._run_many = lambda feeds: run_queue(queue, feeds)
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in session.get_inputs()]
            self.in_flight = 1
            self._run_many = lambda feeds: [session.run(None, feed)[0] for feed in feeds]

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        # length-bucketed batches (as SentenceTransformer.encode does): longest first, so each batch
        # pads to about its own length; rows go back to the input order
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        batches = [order[start:start + batch_size] for start in range(0, len(texts), batch_size)]
        for first in range(0, len(batches), self.in_flight):  # in_flight batches run at once
            group = batches[first:first + self.in_flight]
            tokenized = [self._tokenize([texts[i] for i in rows]) for rows in group]
            hidden = self._run_many([{name: f[name].numpy().astype(np.int64) for name in self.inputs}
                                     for f in tokenized])
            for rows, features, states in zip(group, tokenized, hidden, strict=True):
                features["token_embeddings"] = torch.from_numpy(np.asarray(states, dtype=np.float32))
                with torch.inference_mode():
                    for module in self.later:  # pooling, normalisation, ... exactly as the model defines them
                        features = module(features)
                vectors = features["sentence_embedding"].float().numpy()
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                if out is None:
                    out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
                out[rows] = vectors
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def run_queue(queue, feeds: list[dict]) -> list[np.ndarray]:
    """Each feed's first output, the feeds run on OpenVINO's infer requests at once."""
    results: list = [None] * len(feeds)

    def done(request, index):
        results[index] = request.get_output_tensor(0).data.copy()  # the request's buffer is reused

    queue.set_callback(done)
    for index, feed in enumerate(feeds):
        queue.start_async(feed, index)
    queue.wait_all()
    return results


def export_onnx(st_model, folder: Path) -> Path:
    """`folder/model.onnx`: the model's transformer (token ids -> last hidden state) exported by
    torch, once; later calls find the file."""
    target = folder / "model.onnx"
    if target.is_file():
        return target
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    transformer = st_model[0].auto_model
    tokenize = getattr(st_model, "preprocess", None) or st_model.tokenize
    sample = tokenize(["a short text", "a somewhat longer text, so that the sample batch is padded"])
    names = [n for n in ONNX_INPUTS if n in sample]

    class Hidden(torch.nn.Module):  # positional inputs in, last hidden state out: what export traces
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(names, args, strict=True))).last_hidden_state

    tmp = folder / f".model-{uuid.uuid4().hex}.onnx"
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            # dynamo=False: the TorchScript exporter needs no onnxscript and handles BERT-like models
            torch.onnx.export(Hidden(transformer).eval(), tuple(sample[n] for n in names), str(tmp),
                              input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def quantize_int8(fp32: Path) -> Path:
    """`model-int8.onnx` beside `fp32`, once: MatMul weights as int8, one scale per output channel.
    Quantising every supported op (the embedding Gather too) with one scale per tensor, the library's
    default, gave a mean cosine of only 0.955 to float32 on CodeAlpaca; this gives 0.995."""
    target = fp32.with_name("model-int8.onnx")
    if target.is_file():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = fp32.with_name(f".model-int8-{uuid.uuid4().hex}.onnx")
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def load_exported(st_model, backend: str, folder: Path, name: str):
    """The model on `backend`, or on torch with a warning naming the model and backend when the
    export or the runtime fails (a model the exporter cannot trace, a broken file)."""
    try:
        return ExportedEncoder(st_model, backend, folder)
    except Exception as exc:  # noqa: BLE001 - any failure of export or runtime means: run on torch
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"embedding model {name!r} cannot run on backend {backend} ({text}); using torch",
                      stacklevel=3)
        return None
