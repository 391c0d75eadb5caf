"""Regenerate the committed manifest JSON Schema: `python -m patchkit._schema`."""

from __future__ import annotations

import json
import sys

from patchkit.manifest import json_schema

if __name__ == "__main__":
    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
