"""Language-model plumbing shared by training, evaluation, the runtime and the server.

One chat formatter (`chat`) and one loader (`loading`), so a patch is trained, evaluated and
served on exactly the same prompt text and the same model settings. torch and transformers are
imported inside the functions only.
"""
