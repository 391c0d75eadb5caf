"""The patch artifact, one directory per version: its layout (tensor, PEFT config, model card),
`build` (from a tensor, a PEFT adapter or a training run), `compose` (several patches as one),
`sign`, and `loaded` (a verified patch with its tensor in memory). Torch-free."""
