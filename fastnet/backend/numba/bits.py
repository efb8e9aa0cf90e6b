"""LLVM operations Numba does not expose: fused multiply-add and bit casts.

They let the exp/log in ``fastmath.py`` be written branch-free, so LLVM can
vectorise the numerical-gradient loops that call them (about 2x faster than
libm's calls there: ``benchmarks/bench_numgrad.py``). Each compiles to one
instruction.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_F64 = ir.DoubleType()
_I64 = ir.IntType(64)


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
