"""dlib's face descriptor network, read from its own model file and run on numpy's BLAS.

The dlib-bin wheel is built without a BLAS: its ResNet spends ~100 ms of a core on each face.
The same network as matrix products through numpy's OpenBLAS takes a fraction of that and gives
the same 128 numbers (to float rounding: tests/test_descriptor_net.py), so stored descriptors
and the match threshold do not change. The layers follow dlib's `dnn_face_recognition_ex.cpp`;
the file is read as dlib serializes it (dlib/serialize.h, dlib/dnn/core.h and layers.h), and
anything in it that is not that network is refused rather than guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from findme.errors import ConfigurationError

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# The chip the network reads: 150x150 RGB, as dlib.get_face_chip(..., size=150) cuts it.
CHIP_PX = 150
DESCRIPTOR_LENGTH = 128
# Faces pass through the network a few at a time: larger matrix products cost less per face
# (15-16 ms from 4 to 8 faces against 18.6 alone), but past ~8 the first layers' windows
# outgrow the core's cache and it slows again (18.8 ms a face for 25 at once).
_FACES_PER_PASS = 6


class _Malformed(ValueError):
    pass


class _Reader:
    """dlib's serialization format: variable-length integers, floats as mantissa and exponent,
    booleans as '0'/'1', strings and tensors prefixed by their sizes."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise _Malformed(f"an integer of {size} bytes at {self._at - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        return math.ldexp(mantissa, self.integer())

    def boolean(self) -> bool:
        flag = self._take(1)
        if flag not in (b"0", b"1"):
            raise _Malformed(f"a boolean {flag!r} at {self._at - 1}")
        return flag == b"1"

    def text(self) -> str:
        return self._take(self.integer()).decode("ascii")

    def tensor(self) -> np.ndarray:
        self.expect_version(2, "tensor")
        shape = tuple(self.integer() for _ in range(4))
        count = math.prod(shape)
        return np.frombuffer(self._take(4 * count), "<f4").reshape(shape)

    def alias(self) -> tuple[int, ...]:
        self.expect_version(1, "alias tensor")
        return tuple(self.integer() for _ in range(4))

    def expect_version(self, wanted: int, what: str) -> None:
        found = self.integer()
        if found != wanted:
            raise _Malformed(f"{what} of version {found}, not {wanted}")

    def expect_text(self, *wanted: str) -> str:
        found = self.text()
        if found not in wanted:
            raise _Malformed(f"{found!r} where {' or '.join(wanted)} was expected")
        return found

    def at_end(self) -> bool:
        return self._at == len(self._data)

    def _take(self, count: int) -> bytes:
        if count < 0 or self._at + count > len(self._data):
            raise _Malformed("the file ends early")
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk


# The network as layers from the input to the descriptor. "tag"/"skip" mark dlib's tag1/tag2
# and skip1, "add" its add_prev (the sum with the output of the tag named).
@dataclass(frozen=True)
class _Conv:
    filters: int
    size: int
    stride: int


@dataclass(frozen=True)
class _Op:
    kind: str
    conv: _Conv | None = None
    tag: int = 0


def _block(filters: int, stride: int) -> list[_Op]:
    """dlib's `block`: two 3x3 convolutions, each with its affine layer, a relu between."""
    return [
        _Op("con", _Conv(filters, 3, stride)),
        _Op("affine"),
        _Op("relu"),
        _Op("con", _Conv(filters, 3, 1)),
        _Op("affine"),
    ]


def _residual(filters: int) -> list[_Op]:
    return [_Op("tag", tag=1), *_block(filters, 1), _Op("add", tag=1), _Op("relu")]


def _residual_down(filters: int) -> list[_Op]:
    # The block at stride 2, added to the input pooled to its size.
    return [
        _Op("tag", tag=1),
        *_block(filters, 2),
        _Op("tag", tag=2),
        _Op("skip", tag=1),
        _Op("avg_pool"),
        _Op("add", tag=2),
        _Op("relu"),
    ]


_ARCHITECTURE: list[_Op] = [
    _Op("con", _Conv(32, 7, 2)),
    _Op("affine"),
    _Op("relu"),
    _Op("max_pool"),
    *(_residual(32) * 3),
    *_residual_down(64),
    *(_residual(64) * 3),
    *_residual_down(128),
    *(_residual(128) * 2),
    *_residual_down(256),
    *(_residual(256) * 2),
    *_residual_down(256),
    _Op("avg_pool_everything"),
    _Op("fc"),
]


@dataclass(frozen=True)
class _Layer:
    """One step of the forward pass, with its weights (a convolution's affine folded in)."""

    kind: str
    tag: int = 0
    # convolution: (size * size * in channels, filters), from dlib's (filters, in channels,
    # rows, columns); fc: (inputs, outputs)
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    size: int = 0
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class DescriptorNet:
    mean_rgb: np.ndarray
    layers: tuple[_Layer, ...] = field(repr=False)

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        """The descriptors of face chips (150x150x3 uint8 RGB), one row of 128 per chip."""
        passes = [
            self._forward(chips[start : start + _FACES_PER_PASS])
            for start in range(0, len(chips), _FACES_PER_PASS)
        ]
        return np.vstack(passes) if passes else np.empty((0, DESCRIPTOR_LENGTH), np.float32)

    def _forward(self, chips: list[np.ndarray]) -> np.ndarray:
        # dlib's input layer: each channel less its training mean, over 256.
        batch: np.ndarray = (np.stack(chips).astype(np.float32) - self.mean_rgb) / np.float32(256)
        tagged: dict[int, np.ndarray] = {}
        for layer in self.layers:
            batch = _forward(layer, batch, tagged)
        return batch


def _forward(layer: _Layer, x: np.ndarray, tagged: dict[int, np.ndarray]) -> np.ndarray:
    """One layer on a batch in (faces, rows, columns, channels) order."""
    out: np.ndarray
    if layer.kind == "con":
        out = _convolve(layer, x)
    elif layer.kind == "relu":
        out = np.maximum(x, 0, out=x)
    elif layer.kind == "tag":
        tagged[layer.tag] = out = x
    elif layer.kind == "skip":
        out = tagged[layer.tag]
    elif layer.kind == "max_pool":
        out = _windows(x, layer.size, layer.stride).max(axis=(-2, -1))
    elif layer.kind == "avg_pool":
        out = _windows(x, layer.size, layer.stride).mean(axis=(-2, -1), dtype=np.float32)
    elif layer.kind == "add":
        out = _padded_sum(x, tagged[layer.tag])
    elif layer.kind == "avg_pool_everything":
        out = x.mean(axis=(1, 2), dtype=np.float32)
    else:
        assert layer.kind == "fc" and layer.weights is not None
        out = x @ layer.weights
    return out


def _convolve(layer: _Layer, x: np.ndarray) -> np.ndarray:
    assert layer.weights is not None and layer.bias is not None
    if layer.padding:
        pad = layer.padding
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # Each output pixel's window as one row (rows, columns, then channels, as the filters are
    # laid out here), copied by shifted slices whose channels stay contiguous: one matrix
    # product then does the whole layer for every face of the batch.
    size, stride = layer.size, layer.stride
    faces, height, width, _ = x.shape
    rows, columns = 1 + (height - size) // stride, 1 + (width - size) // stride
    last_row, last_column = stride * (rows - 1) + 1, stride * (columns - 1) + 1
    windows = np.concatenate(
        [
            x[:, dy : dy + last_row : stride, dx : dx + last_column : stride]
            for dy in range(size)
            for dx in range(size)
        ],
        axis=-1,
    )
    out: np.ndarray = windows.reshape(faces * rows * columns, -1) @ layer.weights
    out += layer.bias
    return out.reshape(faces, rows, columns, -1)


def _windows(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(faces, rows, columns, channels, size, size) views of each window of a dlib pooling
    without padding: 1 + (n - size) // stride of them along each side."""
    windows: np.ndarray = sliding_window_view(x, (size, size), axis=(1, 2))
    return windows[:, ::stride, ::stride]


def _padded_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev: where the shapes differ, what one of them lacks counts as zero."""
    if a.shape == b.shape:
        same: np.ndarray = a + b
        return same
    shape = tuple(max(da, db) for da, db in zip(a.shape, b.shape, strict=True))
    total = np.zeros(shape, np.float32)
    total[tuple(slice(0, n) for n in a.shape)] += a
    total[tuple(slice(0, n) for n in b.shape)] += b
    return total


def load(path: Path) -> DescriptorNet:
    """The network of a `MODEL_FILE` at `path`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"The face descriptor model {path} cannot be read ({exc.strerror}): reinstall the "
            "face-recognition-models package."
        ) from exc
    try:
        return _parse(_Reader(data))
    except ValueError as exc:  # _Malformed, a number that does not fit, text that is not text
        raise ConfigurationError(
            f"The face descriptor model {path} is not dlib's ResNet face model v1 as expected "
            f"({exc}): reinstall the face-recognition-models package."
        ) from exc


def _parse(reader: _Reader) -> DescriptorNet:
    reader.expect_version(1, "loss layer")
    reader.expect_text("loss_metric_2")
    reader.real(), reader.real()  # the training loss's margin and distance threshold
    # dlib writes each wrapper's version on the way in (a layer 2, a tag or skip 1, the layer on
    # the input 3), then the input, then each layer's details on the way out.
    expected = ["1" if op.kind in ("tag", "skip") else "2" for op in reversed(_ARCHITECTURE)]
    expected[-1] = "3"
    found = [str(reader.integer()) for _ in expected]
    if found != expected:
        raise _Malformed("the layers are not those of the ResNet face model")
    reader.expect_text("input_rgb_image_sized")
    mean_rgb = np.array([reader.real() for _ in range(3)], np.float32)
    if (reader.integer(), reader.integer()) != (CHIP_PX, CHIP_PX):
        raise _Malformed(f"an input other than {CHIP_PX}x{CHIP_PX}")
    layers = list(_read_layers(reader))
    if not reader.at_end():
        raise _Malformed("data after the last layer")
    return DescriptorNet(mean_rgb=mean_rgb, layers=tuple(_fold_affines(layers)))


def _read_layers(reader: _Reader) -> Iterator[_Layer]:
    for index, op in enumerate(_ARCHITECTURE):
        if op.kind in ("tag", "skip"):
            yield _Layer(op.kind, tag=op.tag)
            continue
        yield _read_details(reader, op)
        # What training left in the wrapper: flags, gradients, the last output.
        for _ in range(3):
            reader.boolean()
        for _ in range(3):
            reader.tensor()
        if index == 0:
            reader.integer()  # the input layer's sample expansion factor


def _read_details(reader: _Reader, op: _Op) -> _Layer:
    if op.kind == "con":
        assert op.conv is not None
        return _read_conv(reader, op.conv)
    if op.kind == "affine":
        return _read_affine(reader)
    if op.kind == "relu":
        if reader.expect_text("relu_", "relu_2") == "relu_2" and reader.boolean():
            raise _Malformed("a disabled relu")
        return _Layer("relu")
    if op.kind in ("max_pool", "avg_pool", "avg_pool_everything"):
        reader.expect_text("max_pool_2" if op.kind == "max_pool" else "avg_pool_2")
        rows, columns, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(6))
        if op.kind == "avg_pool_everything":
            if (rows, columns) != (0, 0):
                raise _Malformed("a pooling of part of the image before the descriptor")
            return _Layer(op.kind)
        if rows != columns or stride_y != stride_x or (pad_y, pad_x) != (0, 0):
            raise _Malformed("an unexpected pooling window")
        return _Layer(op.kind, size=rows, stride=stride_y)
    if op.kind == "add":
        reader.expect_text("add_prev_")
        return _Layer("add", tag=op.tag)
    assert op.kind == "fc"
    return _read_fc(reader)


def _read_conv(reader: _Reader, conv: _Conv) -> _Layer:
    version = reader.expect_text("con_4", "con_5", "con_6")
    params = reader.tensor().ravel()
    filters, rows, columns, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
    filter_shape, bias_shape = reader.alias(), reader.alias()
    for _ in range(4):
        reader.real()  # learning rate and weight decay multipliers
    use_bias = reader.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6" and reader.boolean():
        raise _Malformed("a convolution with a fused relu")
    if (filters, rows, columns, stride_y, stride_x) != (
        conv.filters,
        conv.size,
        conv.size,
        conv.stride,
        conv.stride,
    ) or pad_y != pad_x:
        raise _Malformed(f"a convolution other than {conv}")
    weights_size = math.prod(filter_shape)
    weights = params[:weights_size].reshape(filter_shape)
    bias = params[weights_size : weights_size + math.prod(bias_shape)]
    if not use_bias or bias.size != filters:
        bias = np.zeros(filters, np.float32)
    return _Layer(
        "con",
        weights=weights.transpose(2, 3, 1, 0).reshape(-1, filters),
        bias=bias.astype(np.float32),
        size=conv.size,
        stride=conv.stride,
        padding=pad_y,
    )


def _read_affine(reader: _Reader) -> _Layer:
    """An affine layer, or the batch normalisation it was trained as, as scale and shift."""
    version = reader.expect_text("bn_con2", "affine_", "affine_2")
    params = reader.tensor().ravel()
    gamma_shape, beta_shape = reader.alias(), reader.alias()
    channels = math.prod(gamma_shape)
    if math.prod(beta_shape) != channels or params.size != 2 * channels:
        raise _Malformed("an affine layer whose sizes disagree")
    gamma, beta = params[:channels], params[channels:]
    if version == "bn_con2":
        reader.tensor(), reader.tensor()  # the last batch's means and inverse deviations
        running_means, running_variances = reader.tensor().ravel(), reader.tensor().ravel()
        reader.integer(), reader.integer()  # updates seen, running window
        for _ in range(4):
            reader.real()
        eps = reader.real()
        scale = gamma / np.sqrt(running_variances + eps)
        return _Layer("affine", weights=scale, bias=beta - scale * running_means)
    if reader.integer() != 0:  # dlib's CONV_MODE: one scale per channel
        raise _Malformed("an affine layer not per channel")
    if version == "affine_2" and reader.boolean():
        raise _Malformed("a disabled affine layer")
    return _Layer("affine", weights=gamma, bias=beta)


def _read_fc(reader: _Reader) -> _Layer:
    version = reader.expect_text("fc_2", "fc_3")
    outputs, inputs = reader.integer(), reader.integer()
    params = reader.tensor().ravel()
    weight_shape, _ = reader.alias(), reader.alias()
    if reader.integer() != 1:  # dlib's FC_NO_BIAS
        raise _Malformed("a final layer with a bias")
    for _ in range(4):
        reader.real()
    if version == "fc_3":
        reader.boolean()
    if outputs != DESCRIPTOR_LENGTH or math.prod(weight_shape) != inputs * outputs:
        raise _Malformed(f"a final layer of {outputs} outputs, not {DESCRIPTOR_LENGTH}")
    return _Layer("fc", weights=params[: inputs * outputs].reshape(inputs, outputs))


def _fold_affines(layers: list[_Layer]) -> Iterator[_Layer]:
    """Each convolution with the affine layer after it made one: scaled filters, shifted bias."""
    pending: _Layer | None = None
    for layer in layers:
        if layer.kind == "affine":
            if pending is None:
                raise _Malformed("an affine layer after something other than a convolution")
            assert pending.weights is not None and pending.bias is not None
            assert layer.weights is not None and layer.bias is not None
            yield _Layer(
                "con",
                weights=np.ascontiguousarray(pending.weights * layer.weights, np.float32),
                bias=(pending.bias * layer.weights + layer.bias).astype(np.float32),
                size=pending.size,
                stride=pending.stride,
                padding=pending.padding,
            )
            pending = None
            continue
        if pending is not None:
            yield pending
            pending = None
        if layer.kind == "con":
            pending = layer
        else:
            yield layer
    if pending is not None:
        yield pending
