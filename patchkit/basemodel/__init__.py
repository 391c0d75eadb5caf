"""The base model a patch is for: its content fingerprint (`fingerprint`, torch-free, sharding-
independent, cached by file stat) and the local model directory every command points at (`modeldir`)."""
