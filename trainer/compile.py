"""Regional compilation of the decoder layers, for the training loop only.

A LoRA step of a small model on a GPU is bound by the host, not the GPU: on an H100 a SmolLM2-135M
step at batch 16 held about 44 ms of GPU work in a 320 ms step. The step dispatches tens of
thousands of ops (a CPU profile of SmolLM2's structure under LoRA counts ~64k a step, views
included: 30 layers x 7 LoRA-wrapped linears, their casts and elementwise ops, forward and
backward), each with its Python and dispatcher cost. `torch.compile` traces one decoder layer,
peft's Python included, into a graph whose elementwise ops inductor fuses, so a layer should cost
a few dozen kernel launches instead of hundreds of dispatched ops (unmeasured on a GPU so far:
bench/gpu_check.sh). Compiling each layer rather than the whole model
(PyTorch's "regional compilation" recipe) compiles the layer's code once and reuses it for the
other layers (their weights are inputs of the graph, not constants), so the first step pays
about a minute instead of one per layer.

It is off by default: on the CPU the step is bound by its matmuls and compilation buys nothing
(SmolLM2's shape on the 2-core box: 3.49 s a step eager, 3.57 s compiled). The layers are compiled
for the training loop only and put back afterwards: evaluation and generation (a KV cache, a new
shape every decoding step) run eagerly. A layer that dynamo cannot compile runs eagerly with a
warning (`suppress_errors`), so a run never fails for the optimisation's sake.
"""

from __future__ import annotations

import contextlib
import sys

from assay.core.models import causal_lm


def decoder_layers(model) -> list:
    """The decoder layers of a *ForCausalLM, under a peft wrapper or not (empty if it has none)."""
    layers = getattr(getattr(causal_lm(model), "model", None), "layers", None)
    return list(layers) if layers is not None else []


@contextlib.contextmanager
def compiled_layers(model, mode: str):
    """Within the block, each decoder layer of `model` runs compiled (`mode`: a torch.compile mode;
    "off": nothing is compiled). The layers' weights and state_dict keys are untouched."""
    if mode == "off":
        yield []
        return
    import torch
    import torch._dynamo

    layers = decoder_layers(model)
    if not layers:
        print(f"warning: train: compile_mode={mode}: {type(model).__name__} has no decoder layers at "
              "model.layers; training without compilation", file=sys.stderr)
    suppress = torch._dynamo.config.suppress_errors
    torch._dynamo.config.suppress_errors = True
    # dynamic: the padding-free row's length changes every step; a graph with a symbolic length
    # is compiled once instead of once per length
    for layer in layers:
        layer.compile(mode=mode, dynamic=True)
    try:
        yield layers
    finally:
        for layer in layers:
            # nn.Module.compile() keeps the compiled callable here; there is no public "uncompile"
            layer._compiled_call_impl = None
        torch._dynamo.config.suppress_errors = suppress
