"""The model package is the paper alone: building, initialising and differentiating every
variant on a CPU, with both attention implementations, loads no module of the CPU backend
(`vivit_jax.backends.cpu`: the compiled kernel, blocked attention, the XLA:CPU options)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import sys
import jax, jax.numpy as jnp
import vivit_jax.models as models
from tests.models.helpers import TINY_INPUT, tiny_config

for kind in ("spacetime", "factorized_encoder", "factorized_self_attention_block",
             "factorized_dot_product_attention"):
    for attention in ("einsum", "fused"):
        cfg = tiny_config(kind, attention_implementation=attention)
        model = models.create_model(cfg, num_classes=5)
        x = jnp.ones(TINY_INPUT)
        params = model.init(jax.random.key(0), x, train=False)["params"]
        grads = jax.grad(lambda p: model.apply({"params": p}, x, train=False).sum())(params)
        assert jax.tree.leaves(grads), kind
loaded = sorted(m for m in sys.modules if m.startswith("vivit_jax.backends"))
print("LOADED", loaded)
"""


def test_models_load_no_cpu_backend_module():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout, done.stdout
