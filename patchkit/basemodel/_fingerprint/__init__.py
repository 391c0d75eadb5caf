"""Private machinery behind `patchkit.basemodel.fingerprint`: finding, hashing and caching weights.

The digest format (it must stay reproducible by other tools, so it is spelled out here):

- each tensor gives one line, `json.dumps([name, dtype, shape, hex(H(raw bytes))])` with
  `separators=(",", ":")` and `ensure_ascii=True`, where H is the digest's algorithm;
- the root is `H(b"pk-tensors-v1\\n" + b"".join(line + b"\\n" for line in sorted(lines)))`;
- the digest string is `pk-tensors-<algorithm>-v1:<hex root>`.

File names, sharding, tensor order and the safetensors `__metadata__` do not enter the digest.
"""
