"""Runs exported models in a Python that cannot import vivit_jax; the parent is the test.

    python -S bare_runner.py jax|tf SITE_PACKAGES EXPORT_DIR ...

`-S` skips the `site` module, so no `.pth` file runs: the venv's editable install of vivit_jax
(a finder that `__editable__*.pth` puts on `sys.meta_path`) is never installed. Only
SITE_PACKAGES is added to `sys.path`; the caller starts this in a directory outside the repo
without PYTHONPATH. Before anything else the script proves that `import vivit_jax` fails.

Each EXPORT_DIR holds the exported files and `reference.npz` (frames and the checkpoint's
logits computed by the project). Prints one JSON line: {dir: {batch: max |error|}}.
"""

import json
import os
import sys

mode, site, *directories = sys.argv[1:]
sys.path = [p for p in sys.path if p not in ("", os.getcwd())] + [site]
assert not any("__editable__" in type(f).__module__ for f in sys.meta_path), sys.meta_path
try:
    import vivit_jax  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit(f"vivit_jax is importable from {vivit_jax.__file__}")

import numpy as np  # noqa: E402

results = {}
for directory in directories:
    ref = np.load(os.path.join(directory, "reference.npz"))
    errors = {}
    if mode == "jax":
        import jax

        with open(os.path.join(directory, "model.jax_export"), "rb") as f:
            exported = jax.export.deserialize(f.read())
        for b in (1, 3):
            logits = np.asarray(exported.call(ref[f"frames{b}"]))
            assert logits.dtype == np.float32 and logits.shape == ref[f"logits{b}"].shape
            errors[b] = float(np.abs(logits - ref[f"logits{b}"]).max())
    else:
        import tensorflow as tf

        serve = tf.saved_model.load(os.path.join(directory, "saved_model")).signatures[
            "serving_default"
        ]
        for b in (1, 3):
            out = serve(frames=tf.constant(ref[f"frames{b}"]))
            logits, probs = out["logits"].numpy(), out["probabilities"].numpy()
            assert logits.dtype == np.float32 and logits.shape == ref[f"logits{b}"].shape
            errors[b] = float(np.abs(logits - ref[f"logits{b}"]).max())
            errors[f"p{b}"] = float(np.abs(probs - ref[f"probabilities{b}"]).max())
    results[os.path.basename(directory)] = errors
others = sorted(m for m in ("vivit_jax", "flax", "tensorflow", "jax") if m in sys.modules)
print(json.dumps({"results": results, "modules": others}))
