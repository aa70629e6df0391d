"""The registry's architecture names, importable without torch (the CLI's parser lists them)."""

GENERALIZATION_BLOCKS = ("ssif", "mhg", "lgcm")
ARCH_NAMES = ("mgssnet", "mgssnet-vr", "bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
              "cheng2020-attn", *(f"bmshj2018-factorized-{m}" for m in GENERALIZATION_BLOCKS))
