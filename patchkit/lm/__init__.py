"""Language-model plumbing shared by training, evaluation, the runtime and the server.

One chat formatter (`chat`), one loader (`loading`) and one prefix layout (`prefix`: where the
patch goes, its mask, the positions, the cache argument), so a patch is trained, evaluated and
served on exactly the same prompt text, model settings and token layout. `chat` and `loading`
import torch and transformers inside their functions only; `prefix` imports torch.
"""
