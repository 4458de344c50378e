"""LLMConfig: every field carries help, the base URL comes from the environment, values are checked."""

from __future__ import annotations

from dataclasses import fields

import pytest

from assay.core.errors import AssayError
from assay.core.llm import LLMClient, LLMConfig


def test_config_fields_carry_help_and_are_checked(monkeypatch):
    assert all(f.metadata.get("help") for f in fields(LLMConfig))
    monkeypatch.setenv("ASSAY_LLM_BASE_URL", "http://example:1/v1")
    assert LLMConfig().base_url == "http://example:1/v1"
    with pytest.raises(AssayError, match="concurrency must be >= 1"):
        LLMClient(LLMConfig(concurrency=0))
