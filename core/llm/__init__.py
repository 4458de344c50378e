"""The LLM layer: every LLM call in Assay goes through here.

    config.py   LLMConfig: endpoint, model, sampling, concurrency, retries, cache, embedded server
    client.py   LLMClient.run_batch: Requests in, Results out (failures are data), journalled
    parsing.py  reading replies: tolerant JSON, shape-checking parsers, the reply as text
    pacing.py   the requests-per-minute limiter and Retry-After
    server.py   the embedded llama.cpp server (`assay llm serve`, or started by the client)
    journal.py  the run journal and reply cache in the catalog, and the runs' records

The client's API is importable from here (`from assay.core.llm import LLMClient, LLMConfig, ...`);
the server and the journal are imported from their modules.
"""

from .client import LLMClient, Request, Result
from .config import BASE_URL_ENV, LLMConfig
from .pacing import RateLimiter, retry_after_seconds
from .parsing import ParseError, SchemaError, json_parser, parse_json, reply_text

__all__ = ["BASE_URL_ENV", "LLMClient", "LLMConfig", "ParseError", "RateLimiter", "Request", "Result",
           "SchemaError", "json_parser", "parse_json", "reply_text", "retry_after_seconds"]
