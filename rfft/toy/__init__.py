"""The ``toy`` generator: small diffusers models trained on a CPU on painted scenes (docs/toy.md)."""
