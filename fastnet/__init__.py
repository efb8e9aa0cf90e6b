"""fastnet: the neural network of "Deep Learning from Scratch", fast on NumPy, Numba and CuPy.

Pick a backend once and the same code runs on it::

    import fastnet
    fastnet.set_backend("numba")          # or "numpy", "cupy", "auto"
    with fastnet.use_backend("numpy"):    # scoped to this thread / task
        ...
"""

from __future__ import annotations

from . import activations, datasets, functions, gradient, io, layers, nets, optimizers, plot, train, util
from .backend import (
    BACKEND_NAMES,
    Backend,
    BackendStatus,
    available_backends,
    get_backend,
    set_backend,
    to_numpy,
    use_backend,
)
from .backend import init_from_env
from .errors import (
    BackendMismatchError,
    BackendUnavailableError,
    ChecksumError,
    DatasetError,
    DownloadError,
    FastnetError,
)
from .functions import (
    cross_entropy_error,
    identity_function,
    mean_squared_error,
    relu,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    step_function,
    sum_squared_error,
)
from .gradient import gradient_descent, numerical_diff, numerical_gradient
from .layers import (
    Activation,
    Affine,
    AddLayer,
    BatchNormalization,
    Dropout,
    MulLayer,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
)
from .conv_layers import Convolution, Pooling
from .io import ModelFileError, load_net, load_params, save_params
from .nets import MultiLayerNet, Net, TwoLayerNet
from .convnets import DeepConvNet, SimpleConvNet
from .optimizers import SGD, AdaGrad, Adam, AdamW, Momentum, Nesterov, Optimizer, RMSprop, make_optimizer
from .train import History, Trainer, TrainingDivergedError, TrainingWarning
from .util import col2im, conv_output_size, im2col, shuffle_dataset, smooth_curve

#: The book's ch.6 ``MultiLayerNetExtend`` (dropout, batch norm): ``MultiLayerNet`` takes the same arguments.
MultiLayerNetExtend = MultiLayerNet

__version__ = "0.1.0"

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendStatus",
    "available_backends",
    "get_backend",
    "set_backend",
    "to_numpy",
    "use_backend",
    "FastnetError",
    "BackendMismatchError",
    "BackendUnavailableError",
    "ChecksumError",
    "DatasetError",
    "DownloadError",
    "functions",
    "gradient",
    "layers",
    "nets",
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
    "mean_squared_error",
    "sum_squared_error",
    "cross_entropy_error",
    "numerical_diff",
    "numerical_gradient",
    "gradient_descent",
    "MulLayer",
    "AddLayer",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Activation",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Net",
    "TwoLayerNet",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "activations",
    "SimpleConvNet",
    "DeepConvNet",
    "Convolution",
    "Pooling",
    "im2col",
    "col2im",
    "conv_output_size",
    "datasets",
    "io",
    "optimizers",
    "plot",
    "train",
    "util",
    "smooth_curve",
    "shuffle_dataset",
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "make_optimizer",
    "Trainer",
    "History",
    "TrainingDivergedError",
    "TrainingWarning",
    "save_params",
    "load_params",
    "load_net",
    "ModelFileError",
    "__version__",
]

try:
    init_from_env()  # FASTNET_BACKEND picks the default once, at import
except (ValueError, BackendUnavailableError):
    # A bad FASTNET_BACKEND is raised again, with the same message, by the first
    # get_backend(): `import fastnet` still works, set_backend() can repair it,
    # and the command line reports it in one line instead of a traceback.
    pass
