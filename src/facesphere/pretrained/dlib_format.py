"""Reader for dlib's binary serialization format (``dlib/serialize.h`` and the DNN layers).

Only what the three pretrained face models need is supported: the ResNet face recogniser,
the MMOD CNN face detector and the regression-tree shape predictor. Everything is read into
plain numpy arrays and small dataclasses; the torch modules are built elsewhere.

Encoding summary (written from dlib's documentation of the format):

* integers: one control byte whose low nibble is the number of little-endian payload bytes
  (1..8) and whose bit 0x80 marks a negative value, then the payload;
* floating point numbers: a (mantissa int64, exponent int16) pair of integers, value
  ``mantissa * 2**exponent``; exponents 32000/32001/32002 stand for +inf/-inf/nan;
* strings: length, then the raw bytes; bools: the character ``'1'`` or ``'0'``;
* DNN tensors: version 2, four dimensions, then raw little-endian float32 data.

A network is serialized from the outside in: each wrapper writes its version, then its
sub-network, then (for computational layers) the layer's own details. The reader therefore
returns the layers innermost first, the order in which their parameters appear in the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.errors import ModelError

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}

LAYER_NAMES = frozenset(
    {
        "con_4",
        "con_5",
        "con_6",
        "fc_2",
        "fc_3",
        "affine_",
        "affine_2",
        "bn_con2",
        "bn_fc2",
        "relu_",
        "relu_2",
        "add_prev_",
        "avg_pool_2",
        "max_pool_2",
    }
)
INPUT_NAMES = frozenset(
    {
        "input_rgb_image_sized",
        "input_rgb_image",
        "input_rgb_image_pyramid",
        "input_rgb_image_pyramid2",
    }
)
LOSS_NAMES = frozenset({"loss_metric_", "loss_metric_2", "loss_mmod_"})


class DlibFormatError(ModelError, ValueError):
    """A file is not a readable dlib model of the expected kind."""


@dataclass
class Layer:
    """One computational layer read from a network file.

    `kind` is one of con, fc, affine, relu, add_prev, avg_pool, max_pool; `arrays` holds
    numpy parameters (conv weights (out, in, kh, kw), fc weights (in, out), affine gamma and
    beta) and `options` the integer hyper-parameters (strides, paddings, window sizes...).
    """

    kind: str
    version: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """A dlib DNN file: the loss, the input layer and the layers innermost first.

    `wrappers` is the list of wrapper versions from the outside in (2 or 3 for a layer that
    holds a computational layer, 1 for tag and skip layers in the files we know).
    """

    path: str
    loss: dict[str, Any]
    input: dict[str, Any]
    layers: list[Layer]
    wrappers: list[int]


@dataclass
class ShapePredictorData:
    """The regression-tree cascade of a dlib shape predictor, as flat arrays.

    Shapes: initial_shape (P, 2); anchor_idx (C, F); deltas (C, F, 2); split_idx1/idx2
    (C, T, S); split_thresh (C, T, S); leaf_values (C, T, L, P, 2) with S = L - 1, C cascade
    levels, T trees per level, F feature pixels per level and P landmarks.
    """

    initial_shape: np.ndarray
    anchor_idx: np.ndarray
    deltas: np.ndarray
    split_idx1: np.ndarray
    split_idx2: np.ndarray
    split_thresh: np.ndarray
    leaf_values: np.ndarray


class Reader:
    """Sequential decoder over the bytes of one dlib file."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = data
        self.pos = 0
        self.name = name

    # -- errors -----------------------------------------------------------------------------
    def fail(self, what: str) -> DlibFormatError:
        """An error naming the file and the byte offset."""
        return DlibFormatError(f"{self.name}: {what} (at byte {self.pos} of {len(self.data)})")

    def at_end(self) -> bool:
        """True when every byte has been consumed."""
        return self.pos >= len(self.data)

    # -- scalars ----------------------------------------------------------------------------
    def int_(self, what: str = "integer") -> int:
        """A dlib variable-length integer (signed or unsigned)."""
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise self.fail(f"unexpected end of file reading {what}")
        ctrl = data[pos]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            raise self.fail(f"bad integer control byte 0x{ctrl:02x} reading {what}")
        end = pos + 1 + size
        if end > len(data):
            raise self.fail(f"unexpected end of file reading {what}")
        value = int.from_bytes(data[pos + 1 : end], "little")
        self.pos = end
        return -value if ctrl & 0x80 else value

    def float_(self, what: str = "float") -> float:
        """A dlib float/double: mantissa and exponent integers."""
        mantissa = self.int_(what)
        exponent = self.int_(what)
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def floats(self, count: int, what: str = "floats") -> np.ndarray:
        """`count` consecutive dlib floats as a float64 array (decoded in one tight loop)."""
        data = self.data
        pos = self.pos
        n = len(data)
        out = np.empty(count, dtype=np.float64)
        ldexp = math.ldexp
        try:
            for i in range(count):
                c = data[pos]
                s = c & 0x0F
                m = int.from_bytes(data[pos + 1 : pos + 1 + s], "little")
                if c & 0x80:
                    m = -m
                if s == 0 or s > 8 or c & 0x70:
                    raise ValueError
                pos += 1 + s
                c = data[pos]
                s = c & 0x0F
                e = int.from_bytes(data[pos + 1 : pos + 1 + s], "little")
                if c & 0x80:
                    e = -e
                if s == 0 or s > 8 or c & 0x70:
                    raise ValueError
                pos += 1 + s
                if pos > n:
                    raise IndexError
                out[i] = _SPECIAL_EXPONENTS[e] if e >= 32000 else ldexp(m, e)
        except (IndexError, ValueError, KeyError):
            self.pos = min(pos, n)
            raise self.fail(f"damaged or truncated data reading {what}") from None
        self.pos = pos
        return out

    def bool_(self, what: str = "bool") -> bool:
        """A bool stored as the character '1' or '0'."""
        if self.pos >= len(self.data):
            raise self.fail(f"unexpected end of file reading {what}")
        ch = self.data[self.pos]
        if ch not in (0x30, 0x31):
            raise self.fail(f"bad bool byte 0x{ch:02x} reading {what}")
        self.pos += 1
        return ch == 0x31

    def string(self, what: str = "string", max_len: int = 1 << 16) -> str:
        """A length-prefixed string."""
        size = self.int_(what)
        if size < 0 or size > max_len or self.pos + size > len(self.data):
            raise self.fail(f"bad string length {size} reading {what}")
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-text bytes reading {what}") from None

    def peek_string(self) -> str | None:
        """The string at the current position if one plausibly starts here, else None."""
        saved = self.pos
        try:
            text = self.string(max_len=64)
        except DlibFormatError:
            return None
        finally:
            self.pos = saved
        return text if text.isprintable() else None

    def expect(self, allowed: frozenset[str] | set[str], what: str) -> str:
        """A version/name string that must be one of `allowed`."""
        saved = self.pos
        try:
            text = self.string(what, max_len=256)
        except DlibFormatError:
            self.pos = saved
            raise self.fail(f"expected {what} ({', '.join(sorted(allowed))})") from None
        if text not in allowed:
            self.pos = saved
            raise self.fail(f"expected {what} ({', '.join(sorted(allowed))}), found {text!r}")
        return text

    # -- DNN structures -----------------------------------------------------------------------
    def tensor(self, what: str = "tensor") -> np.ndarray:
        """A DNN tensor: version 2, (n, k, nr, nc), raw float32 little-endian data."""
        version = self.int_(what)
        if version != 2:
            raise self.fail(f"unsupported tensor version {version} reading {what}")
        dims = [self.int_(what) for _ in range(4)]
        if any(d < 0 for d in dims):
            raise self.fail(f"negative tensor dimension {dims} reading {what}")
        count = int(np.prod(dims, dtype=np.int64))
        nbytes = 4 * count
        if self.pos + nbytes > len(self.data):
            raise self.fail(f"tensor of {count} floats runs past the end of file ({what})")
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += nbytes
        return arr.astype(np.float32).reshape(dims)

    def alias_tensor(self, what: str = "alias tensor") -> tuple[int, int, int, int]:
        """An alias_tensor: version 1 and four dimensions (no data)."""
        version = self.int_(what)
        if version != 1:
            raise self.fail(f"unsupported alias tensor version {version} reading {what}")
        n, k, nr, nc = (self.int_(what) for _ in range(4))
        return (n, k, nr, nc)

    def matrix(self, what: str = "matrix") -> np.ndarray:
        """A dlib::matrix<float>: rows, columns (negated in the newer format), then values."""
        nr = abs(self.int_(what))
        nc = abs(self.int_(what))
        if nr * nc > len(self.data):
            raise self.fail(f"implausible matrix size {nr}x{nc} reading {what}")
        return self.floats(nr * nc, what).reshape(nr, nc)

    def count(self, what: str, limit: int = 10_000_000) -> int:
        """A container length, checked for plausibility."""
        n = self.int_(what)
        if n < 0 or n > limit or n > len(self.data) - self.pos:
            raise self.fail(f"implausible length {n} reading {what}")
        return n


# ---------------------------------------------------------------------------------------------
# Layer details


def _read_layer(r: Reader) -> Layer:
    name = r.expect(LAYER_NAMES, "layer name")
    if name.startswith("con_"):
        params = r.tensor("con params")
        num_filters = r.int_("num filters")
        nr, nc = r.int_("kernel rows"), r.int_("kernel cols")
        sy, sx = r.int_("stride"), r.int_("stride")
        py, px = r.int_("padding"), r.int_("padding")
        fshape = r.alias_tensor("filters")
        bshape = r.alias_tensor("biases")
        for _ in range(4):
            r.float_("learning rate multiplier")
        use_bias = r.bool_("use_bias") if name in ("con_5", "con_6") else True
        if name == "con_6":
            r.bool_("use_relu")
        flat = params.reshape(-1)
        nfilt = int(np.prod(fshape))
        if fshape[0] != num_filters or fshape[2:] != (nr, nc) or flat.size < nfilt:
            raise r.fail(f"inconsistent convolution shapes {fshape} vs {params.shape}")
        weight = flat[:nfilt].reshape(fshape)
        nbias = int(np.prod(bshape))
        if use_bias and flat.size >= nfilt + nbias:
            bias = flat[nfilt : nfilt + nbias].copy()
        else:
            bias = np.zeros(num_filters, np.float32)
        return Layer(
            "con",
            name,
            {"weight": weight.copy(), "bias": bias},
            {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)},
        )
    if name.startswith("fc_"):
        num_outputs = r.int_("num outputs")
        num_inputs = r.int_("num inputs")
        params = r.tensor("fc params").reshape(-1)
        wshape = r.alias_tensor("fc weights")
        bshape = r.alias_tensor("fc biases")
        bias_mode = r.int_("fc bias mode")
        for _ in range(4):
            r.float_("learning rate multiplier")
        if name == "fc_3":
            r.bool_("use_bias")
        nw = int(np.prod(wshape))
        if params.size < nw:
            raise r.fail("fc params smaller than the weights")
        arrays = {"weight": params[:nw].reshape(num_inputs, num_outputs).copy()}
        if bias_mode == 0 and params.size >= nw + int(np.prod(bshape)):
            arrays["bias"] = params[nw : nw + num_outputs].copy()
        return Layer("fc", name, arrays, {"outputs": num_outputs, "inputs": num_inputs})
    if name in ("affine_", "affine_2"):
        params = r.tensor("affine params").reshape(-1)
        g = r.alias_tensor("gamma")
        r.alias_tensor("beta")
        mode = r.int_("affine mode")
        if name == "affine_2":
            r.bool_("disabled")
        n = int(np.prod(g))
        return Layer(
            "affine",
            name,
            {"gamma": params[:n].copy(), "beta": params[n : 2 * n].copy()},
            {"mode": mode},
        )
    if name in ("bn_con2", "bn_fc2"):
        params = r.tensor("bn params").reshape(-1)
        g = r.alias_tensor("gamma")
        r.alias_tensor("beta")
        r.tensor("bn means")
        r.tensor("bn invstds")
        running_means = r.tensor("bn running means").reshape(-1)
        running_vars = r.tensor("bn running variances").reshape(-1)
        r.int_("bn num updates")
        r.int_("bn window")
        for _ in range(4):
            r.float_("learning rate multiplier")
        eps = r.float_("bn eps")
        n = int(np.prod(g))
        gamma = params[:n].astype(np.float64) / np.sqrt(running_vars.astype(np.float64) + eps)
        beta = params[n : 2 * n] - gamma * running_means
        return Layer(
            "affine",
            name,
            {"gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32)},
            {"mode": 1 if name == "bn_con2" else 0},
        )
    if name in ("relu_", "relu_2"):
        if name == "relu_2":
            r.bool_("disabled")
        return Layer("relu", name)
    if name == "add_prev_":
        return Layer("add_prev", name)
    # pooling layers
    nr, nc = r.int_("pool rows"), r.int_("pool cols")
    sy, sx = r.int_("pool stride"), r.int_("pool stride")
    py, px = r.int_("pool padding"), r.int_("pool padding")
    kind = "avg_pool" if name.startswith("avg") else "max_pool"
    return Layer(kind, name, {}, {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)})


def _read_loss(r: Reader) -> dict[str, Any]:
    name = r.expect(LOSS_NAMES, "loss layer name")
    if name == "loss_metric_":
        return {"kind": "metric", "margin": 0.1, "dist_thresh": 0.75}
    if name == "loss_metric_2":
        return {
            "kind": "metric",
            "margin": r.float_("margin"),
            "dist_thresh": r.float_("distance threshold"),
        }
    version = r.int_("mmod options version")
    if not 1 <= version <= 4:
        raise r.fail(f"unsupported mmod options version {version}")
    windows: list[dict[str, Any]] = []
    if version == 1:
        windows.append(
            {"width": r.int_("window width"), "height": r.int_("window height"), "label": ""}
        )
    else:
        for _ in range(r.count("detector windows", 1000)):
            wv = r.int_("window version")
            if wv not in (1, 2):
                raise r.fail(f"unsupported detector window version {wv}")
            w, h = r.int_("window width"), r.int_("window height")
            label = r.string("window label") if wv == 2 else ""
            windows.append({"width": w, "height": h, "label": label})
    opts: dict[str, Any] = {"kind": "mmod", "detector_windows": windows}
    opts["loss_per_false_alarm"] = r.float_("loss per false alarm")
    opts["loss_per_missed_target"] = r.float_("loss per missed target")
    opts["truth_match_iou_threshold"] = r.float_("truth match iou")
    opts["nms_iou"] = r.float_("nms iou threshold")
    opts["nms_percent_covered"] = r.float_("nms percent covered threshold")
    opts["ignore_iou"] = r.float_("ignore iou threshold")
    opts["ignore_percent_covered"] = r.float_("ignore percent covered threshold")
    opts["assume_image_pyramid"] = r.int_("assume image pyramid") if version >= 3 else 1
    opts["use_bounding_box_regression"] = False
    if version >= 4:
        opts["use_bounding_box_regression"] = r.bool_("use bbr")
        opts["bbr_lambda"] = r.float_("bbr lambda")
    return opts


def _read_input(r: Reader) -> dict[str, Any]:
    name = r.expect(INPUT_NAMES, "input layer name")
    out: dict[str, Any] = {
        "kind": name,
        "mean_rgb": (r.float_("avg red"), r.float_("avg green"), r.float_("avg blue")),
    }
    if name == "input_rgb_image_sized":
        out["size"] = (r.int_("input rows"), r.int_("input cols"))
    elif name == "input_rgb_image_pyramid2":
        out["pyramid_padding"] = r.int_("pyramid padding")
        out["pyramid_outer_padding"] = r.int_("pyramid outer padding")
    elif name == "input_rgb_image_pyramid":
        out["pyramid_padding"], out["pyramid_outer_padding"] = 10, 11
    return out


def read_network(data: bytes, name: str = "<bytes>") -> DlibNetwork:
    """Decode a dlib DNN file (a loss layer over a stack of layers) from bytes."""
    r = Reader(data, name)
    if r.int_("loss layer version") != 1:
        raise r.fail("not a dlib network file: unexpected loss layer version")
    loss = _read_loss(r)
    wrappers: list[int] = []
    while True:
        text = r.peek_string()
        if text in INPUT_NAMES:
            break
        if text in LAYER_NAMES or len(wrappers) > 100_000:
            raise r.fail("network structure is damaged (layer found before the input layer)")
        version = r.int_("layer wrapper version")
        if not 1 <= version <= 3:
            raise r.fail(f"unexpected layer wrapper version {version}")
        wrappers.append(version)
    if not wrappers:
        raise r.fail("network has no layers")
    inp = _read_input(r)
    layers: list[Layer] = []
    first = True
    while not r.at_end():
        layers.append(_read_layer(r))
        for _ in range(3):
            r.bool_("layer state flag")
        r.tensor("x_grad")
        r.tensor("cached output")
        if first:
            r.tensor("grad_final")
            if wrappers[-1] >= 3:
                r.int_("sample expansion factor")
            first = False
        elif not r.at_end() and r.peek_string() not in LAYER_NAMES:
            r.tensor("params_grad")
    if not layers:
        raise r.fail("network has no computational layers")
    return DlibNetwork(name, loss, inp, layers, wrappers)


def read_shape_predictor(data: bytes, name: str = "<bytes>") -> ShapePredictorData:
    """Decode a dlib shape_predictor file (cascade of regression-tree forests) from bytes."""
    r = Reader(data, name)
    if r.int_("shape predictor version") != 1:
        raise r.fail("not a dlib shape predictor: unexpected version")
    init = r.matrix("initial shape").reshape(-1)
    if init.size == 0 or init.size % 2:
        raise r.fail(f"bad initial shape of {init.size} values")
    num_parts = init.size // 2
    idx1: list[list[list[int]]] = []
    idx2: list[list[list[int]]] = []
    thr: list[np.ndarray] = []
    leaves: list[np.ndarray] = []
    for _c in range(r.count("cascade levels", 1000)):
        ntrees = r.count("trees", 100_000)
        li1, li2, lthr, lleaf = [], [], [], []
        for _t in range(ntrees):
            nsplit = r.count("splits", 1 << 20)
            s1, s2, st = [], [], []
            for _s in range(nsplit):
                s1.append(r.int_("split idx1"))
                s2.append(r.int_("split idx2"))
                st.append(r.float_("split threshold"))
            nleaf = r.count("leaves", 1 << 20)
            if nleaf != nsplit + 1:
                raise r.fail(f"tree with {nsplit} splits has {nleaf} leaves")
            vals = []
            for _leaf in range(nleaf):
                nr = abs(r.int_("leaf rows"))
                nc = abs(r.int_("leaf cols"))
                if nr * nc != 2 * num_parts:
                    raise r.fail(f"leaf of size {nr}x{nc} for {num_parts} landmarks")
                vals.append(r.floats(nr * nc, "leaf values"))
            li1.append(s1)
            li2.append(s2)
            lthr.append(st)
            lleaf.append(np.stack(vals))
        idx1.append(li1)
        idx2.append(li2)
        thr.append(np.asarray(lthr, np.float32))
        leaves.append(np.asarray(lleaf, np.float32))
    anchors = [
        [r.int_("anchor index") for _ in range(r.count("anchors"))]
        for _ in range(r.count("anchor levels", 1000))
    ]
    deltas = []
    for _ in range(r.count("delta levels", 1000)):
        n = r.count("deltas")
        deltas.append(r.floats(2 * n, "deltas").reshape(n, 2))
    if not r.at_end():
        raise r.fail("unexpected trailing bytes after the shape predictor")
    if len(anchors) != len(idx1) or len(deltas) != len(idx1):
        raise r.fail("cascade, anchor and delta level counts differ")
    try:
        out = ShapePredictorData(
            initial_shape=init.reshape(num_parts, 2).astype(np.float32),
            anchor_idx=np.asarray(anchors, np.int64),
            deltas=np.asarray(deltas, np.float32),
            split_idx1=np.asarray(idx1, np.int64),
            split_idx2=np.asarray(idx2, np.int64),
            split_thresh=np.stack(thr),
            leaf_values=np.stack(leaves).reshape(*np.stack(leaves).shape[:3], num_parts, 2),
        )
    except ValueError as exc:
        raise r.fail(f"trees of unequal sizes are not supported ({exc})") from None
    nfeat = out.deltas.shape[1]
    if out.split_idx1.max() >= nfeat or out.split_idx2.max() >= nfeat:
        raise r.fail("split feature index out of range")
    if out.anchor_idx.max() >= num_parts:
        raise r.fail("anchor index out of range")
    return out


def _load(path: Path | str) -> tuple[bytes, str]:
    p = Path(path)
    try:
        return p.read_bytes(), str(p)
    except OSError as exc:
        raise DlibFormatError(f"{p}: cannot read file ({exc})") from exc


def load_network(path: Path | str) -> DlibNetwork:
    """Read a dlib DNN model file."""
    data, name = _load(path)
    return read_network(data, name)


def load_shape_predictor(path: Path | str) -> ShapePredictorData:
    """Read a dlib shape predictor file."""
    data, name = _load(path)
    return read_shape_predictor(data, name)
