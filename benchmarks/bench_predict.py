"""Accuracy of TwoLayerNet 784-50-10 on the 10,000 MNIST test images, per backend.

Groups ``predict-10k-<dtype>``; names ``<backend>`` (``net.accuracy(x, t)``),
``book`` (the book's ``accuracy`` in plain NumPy) and ``matmul`` (the two
matrix products alone, preallocated: the floor). Generated data of the same
shape stands in when MNIST is absent (``extra_info["data"]`` says which).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fastnet import TwoLayerNet

from .workloads import (
    PredictMatmuls,
    book_accuracy,
    eval_images,
    measure,
    predict_group,
    start_params,
)

DTYPES = (np.float64, np.float32)
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=[np.dtype(d).name for d in DTYPES])


def predict_info(dtype: Any, impl: str, data: str) -> dict[str, Any]:
    return {"suite": "predict", "case": f"10k-{np.dtype(dtype).name}", "impl": impl,
            "dtype": np.dtype(dtype).name, "data": data, "images": 10000}


@dtypes
def test_accuracy(benchmark: Any, backend: Any, dtype: Any) -> None:
    x_host, labels, data = eval_images(dtype)
    net = TwoLayerNet(784, 50, 10, seed=0, dtype=dtype, backend=backend)
    x, t = backend.asarray(x_host), backend.asarray(labels)
    got = measure(benchmark, lambda: net.accuracy(x, t), group=predict_group(dtype), name=backend.name,
                  info=predict_info(dtype, backend.name, data), sync=backend.synchronize)
    want = book_accuracy(start_params(dtype), x_host, labels)
    benchmark.extra_info["accuracy"] = got
    assert abs(got - want) <= 2e-4, (got, want)  # one image of 10,000 may flip in float32


@dtypes
def test_book(benchmark: Any, dtype: Any) -> None:
    x, labels, data = eval_images(dtype)
    params = start_params(dtype)
    got = measure(benchmark, lambda: book_accuracy(params, x, labels), group=predict_group(dtype),
                  name="book", info=predict_info(dtype, "book", data))
    assert 0.0 <= got <= 1.0


@dtypes
def test_matmul(benchmark: Any, dtype: Any) -> None:
    x, _, data = eval_images(dtype)
    params = start_params(dtype)
    products = PredictMatmuls(x, params["W1"], params["W2"])
    info = predict_info(dtype, "matmul", data)
    info["what"] = "x@W1 and h@W2 into preallocated outputs (NumPy)"
    measure(benchmark, products, group=predict_group(dtype), name="matmul", info=info)
    np.testing.assert_allclose(products.h, x @ params["W1"], rtol=1e-4, atol=1e-6)
