"""`patchkit serve`: an OpenAI-compatible HTTP server where each request picks its patches.

One base model stays in memory; the request's `model` field names the patch set
(`base`, `base+acme/x@1+acme/y@^1`, or an alias from serve.toml). Every patch is resolved,
pulled and verified before first use, and requests with different patch sets share one
continuously batched decode loop (`engine`), each row with its own prefix KV. With
`--engine vllm` the same front end becomes a gateway to a vLLM server (`vllm`).

Importing this package is torch-free; torch loads in `engine` and `vllm` only.
"""

from __future__ import annotations
