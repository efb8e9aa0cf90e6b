"""Numba-compiled kernels of the numba backend (compiled on first use, cached on disk).

* ``step``      fused elementwise parts of predict / loss / backprop / updates
* ``reduce``    sums in NumPy's exact order
* ``fastmath``  vectorisable exp/log within 1 ulp of libm (numerical gradient)
* ``numgrad``   the exact incremental numerical gradient of a net
* ``generic``   the compiled central-difference loop for a Numba-compiled f
"""
