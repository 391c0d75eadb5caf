"""Private helpers under every layer: files (atomic writes, bounded reads, confined paths, locks),
strict JSON, safetensors headers, secret redaction. They import nothing of patchkit's own but
`errors` and `constants`, so any layer may use them."""
