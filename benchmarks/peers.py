"""The same SGD step (784-50-10, ReLU, softmax cross-entropy) in PyTorch and JAX.

Each peer starts from the book's starting parameters and data, so after one
step its parameters can be compared with the book's. Neither library is a
fastnet dependency: cases are skipped with a reason when it is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .workloads import LR

NAMES = ("W1", "b1", "W2", "b2")


def torch_reason(device: str) -> str | None:
    """Why PyTorch cannot run on `device` here, or None."""
    try:
        import torch
    except ImportError as exc:
        return f"PyTorch is not installed ({exc}); pip install torch"
    if device == "cuda" and not torch.cuda.is_available():
        return "PyTorch sees no CUDA device"
    return None


def jax_reason() -> str | None:
    try:
        import jax  # noqa: F401
    except ImportError as exc:
        return f"JAX is not installed ({exc}); pip install jax jaxlib"
    return None


class TorchStep:
    """One step in PyTorch: autograd + ``torch.optim.SGD``, or a hand-written backward.

    autograd is what most users write (``F.cross_entropy``, which has no +1e-7);
    manual is the book's backprop in torch ops, PyTorch's faster form on a CPU.
    """

    def __init__(self, params: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray,
                 *, device: str = "cpu", autograd: bool = True) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.p = {k: torch.tensor(params[k], device=device) for k in NAMES}
        self.x = torch.tensor(x, device=device)
        self.t = torch.tensor(t, device=device)
        self.labels = torch.tensor(t.argmax(axis=1), device=device)
        self.rows = torch.arange(x.shape[0], device=device)
        self.autograd = autograd
        if autograd:
            for v in self.p.values():
                v.requires_grad_(True)
            self.optimizer = torch.optim.SGD(list(self.p.values()), lr=LR)

    def __call__(self) -> Any:
        return self._autograd() if self.autograd else self._manual()

    def _autograd(self) -> Any:
        F = self.torch.nn.functional
        p = self.p
        self.optimizer.zero_grad(set_to_none=True)
        scores = F.relu(self.x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        loss = F.cross_entropy(scores, self.labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _manual(self) -> Any:
        torch, p, x = self.torch, self.p, self.x
        with torch.no_grad():
            a1 = x @ p["W1"] + p["b1"]
            mask = a1 <= 0
            z1 = a1.masked_fill(mask, 0)
            y = torch.softmax(z1 @ p["W2"] + p["b2"], dim=1)
            loss = -torch.log(y[self.rows, self.labels] + 1e-7).mean()
            dy = (y - self.t) / x.shape[0]
            dW2, db2 = z1.T @ dy, dy.sum(0)
            dz1 = (dy @ p["W2"].T).masked_fill_(mask, 0)
            dW1, db1 = x.T @ dz1, dz1.sum(0)
            for key, g in (("W1", dW1), ("b1", db1), ("W2", dW2), ("b2", db2)):
                p[key].sub_(g, alpha=LR)
        return loss

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.p.items()}


class JaxStep:
    """One step as a single ``jax.jit`` of ``value_and_grad`` and the SGD update."""

    def __init__(self, params: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray) -> None:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)  # keep float64 arrays float64
        self.jax = jax
        self.p = {k: jnp.asarray(params[k]) for k in NAMES}
        self.x, self.t = jnp.asarray(x), jnp.asarray(t)

        def loss_fn(p: dict[str, Any], x: Any, t: Any) -> Any:
            scores = jax.nn.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
            return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(scores, axis=1), axis=1))

        def step(p: dict[str, Any], x: Any, t: Any) -> tuple[dict[str, Any], Any]:
            loss, g = jax.value_and_grad(loss_fn)(p, x, t)
            return {k: p[k] - LR * g[k] for k in p}, loss

        self._step = jax.jit(step, donate_argnums=0)
        self.platform = jax.devices()[0].platform

    def __call__(self) -> Any:
        self.p, loss = self._step(self.p, self.x, self.t)
        return loss

    def sync(self) -> None:
        self.jax.block_until_ready(self.p)

    def params(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.p.items()}
