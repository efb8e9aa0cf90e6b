"""Numba-compiled kernels of the numba backend (compiled on first use, cached on disk).

* ``step``      fused elementwise parts of predict / loss / backprop / updates
* ``reduce``    sums in NumPy's exact order
* ``fastmath``  vectorisable exp/log within 1 ulp of libm (numerical gradient)
* ``numgrad``   the exact incremental numerical gradient of a net (driver; kernels in
                ``numgrad_terms``, ``numgrad_layers``, ``numgrad_deep``)
* ``plan``      a net's training step as straight-line calls into reused buffers
* ``generic``   the compiled central-difference loop for a Numba-compiled f
"""
