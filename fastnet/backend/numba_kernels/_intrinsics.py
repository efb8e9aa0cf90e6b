"""LLVM operations Numba does not expose: fused multiply-add, bit casts, cache control.

``fma``, ``as_int64`` and ``as_float64`` let the exp/log in ``fastmath.py`` be
written branch-free, so LLVM can vectorise loops that call them.
``flush_line`` (x86 ``clflushopt``) serves the cache flushes in ``step.py``;
it may only be compiled on a CPU that has the instruction
(``has_clflushopt()``). Each compiles to one instruction.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_F64 = ir.DoubleType()
_I64 = ir.IntType(64)
_I8P = ir.IntType(8).as_pointer()


def has_clflushopt() -> bool:
    """Whether this CPU has x86's ``clflushopt`` (what ``flush_line`` compiles to)."""
    try:
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("clflushopt", False))
    except (ImportError, AttributeError, OSError, RuntimeError):  # pragma: no cover
        return False


@intrinsic
def fma(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """a * b + c rounded once (llvm.fma.f64)."""
    if not all(arg == types.float64 for arg in (a, b, c)):
        return None
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_F64, [_F64, _F64, _F64]), "llvm.fma.f64"
        )
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def as_int64(typingctx, x):  # type: ignore[no-untyped-def]
    """The bits of a float64 as an int64."""
    if x != types.float64:
        return None
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], _I64)

    return sig, codegen


@intrinsic
def as_float64(typingctx, x):  # type: ignore[no-untyped-def]
    """An int64's bits read as a float64."""
    if x != types.int64:
        return None
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], _F64)

    return sig, codegen


@intrinsic
def flush_line(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """clflushopt on the cache line holding arr[idx] (1-D array); changes no value."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(
            context, builder, aty, ary, [args[1]], wraparound=False, boundscheck=False
        )
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_I8P]), "llvm.x86.clflushopt"
        )
        builder.call(fn, [builder.bitcast(ptr, _I8P)])
        return context.get_dummy_value()

    return sig, codegen


_ROW_MAJOR = 101  # CBLAS_ORDER; CblasNoTrans is 111, CblasTrans 112


@intrinsic
def gemm(typingctx, addr, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):  # type: ignore[no-untyped-def]
    """c = op(a) @ op(b) by the ILP64 ``cblas_?gemm`` at address `addr` (row-major, alpha 1, beta 0).

    The address is an argument, not a global, so kernels that call it stay
    cacheable. float32 arrays call an sgemm, float64 a dgemm: the caller
    passes the matching address.
    """
    arrays = (a, b, c)
    if not all(isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C" for arr in arrays):
        return None  # raw pointers with leading dimensions: only C-ordered matrices make sense
    if not c.mutable:
        return None
    dtype = a.dtype
    if dtype not in (types.float32, types.float64) or b.dtype != dtype or c.dtype != dtype:
        return None
    ints = (addr, trans_a, trans_b, m, n, k, lda, ldb, ldc)
    if not all(isinstance(v, types.Integer) for v in ints):
        return None
    sig = types.void(addr, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
    real = _F64 if dtype == types.float64 else ir.FloatType()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, _I64, _I64, _I64, real, real.as_pointer(),
                                           _I64, real.as_pointer(), _I64, real, real.as_pointer(), _I64])

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        addr_v, ta, tb, m_v, n_v, k_v, a_v, lda_v, b_v, ldb_v, c_v, ldc_v = args
        tys = signature.args

        def i64(value, ty):  # type: ignore[no-untyped-def]
            return context.cast(builder, value, ty, types.int64)

        def data(value, ty):  # type: ignore[no-untyped-def]
            return context.make_array(ty)(context, builder, value).data

        fn = builder.inttoptr(i64(addr_v, tys[0]), fnty.as_pointer())
        builder.call(fn, [
            ir.Constant(i32, _ROW_MAJOR),
            builder.trunc(i64(ta, tys[1]), i32),
            builder.trunc(i64(tb, tys[2]), i32),
            i64(m_v, tys[3]), i64(n_v, tys[4]), i64(k_v, tys[5]),
            ir.Constant(real, 1.0), data(a_v, tys[6]), i64(lda_v, tys[7]),
            data(b_v, tys[8]), i64(ldb_v, tys[9]),
            ir.Constant(real, 0.0), data(c_v, tys[10]), i64(ldc_v, tys[11]),
        ])
        return context.get_dummy_value()

    return sig, codegen
