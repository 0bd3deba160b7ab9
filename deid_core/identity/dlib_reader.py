"""Pure-Python reader of dlib's binary serialization for ``dlib_face_recognition_resnet_model_v1.dat``.

Format (dlib/serialize.h, dlib/float_details.h, dlib/dnn/core.h, layers.h, input.h, loss.h):

- integers: one control byte (bit 7 = sign, low 4 bits = number of bytes) then little-endian bytes;
- bools: the ASCII characters ``'1'`` / ``'0'``;
- floats/doubles: int64 mantissa then int16 exponent (value = m * 2**e), each as an integer;
- strings: length (integer) then raw bytes;
- tensors: version 2, four dims (num, k, nr, nc), then raw little-endian float32;
- ``add_loss_layer``: version, loss details, sub-network; ``add_layer``: version, *sub-network*,
  details, three bools, then x_grad / cached_output / params_grad tensors (layers directly on
  the input layer add ``_sample_expansion_factor`` in version 3); tag and skip layers: version 1
  then their sub-network. So the outermost layer's header comes first and the input layer's
  details are the first details in the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deid_core.errors import DeidError


@dataclass
class DlibNode:
    """One serialized layer, listed outermost first. ``kind`` is the details' version string
    (e.g. ``con_4``, ``affine_``), ``"tag_or_skip"`` for tag/skip wrappers, or ``"input"``."""
    kind: str
    fields: dict = field(default_factory=dict)


class _Stream:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> DeidError:
        return DeidError(f"{self.path}: cannot parse dlib network at byte {self.pos}: {what}")

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int(self) -> int:
        ctrl = self.byte()
        n = ctrl & 0x0F
        if n > 8:
            raise self.fail(f"bad integer control byte {ctrl:#x}")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        value = int.from_bytes(raw, "little", signed=False)
        return -value if ctrl & 0x80 else value

    def peek_int(self) -> tuple[int, int]:
        pos = self.pos
        value = self.int()
        end, self.pos = self.pos, pos
        return value, end

    def bool(self) -> bool:
        ch = self.byte()
        if ch not in (ord("0"), ord("1")):
            raise self.fail(f"bad bool byte {ch:#x}")
        return ch == ord("1")

    def float(self) -> float:
        if self.data[self.pos] & 0x70:
            raise self.fail("old ASCII float format is not supported")
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0 ** exponent

    def string(self) -> str:
        n = self.int()
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("latin-1")

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version} (expected 2)")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).copy()
        self.pos += 4 * count
        return arr.reshape(dims)

    def alias_tensor(self) -> tuple[int, ...]:
        version = self.int()
        if version != 1:
            raise self.fail(f"alias_tensor version {version} (expected 1)")
        return tuple(self.int() for _ in range(4))


def _details(s: _Stream) -> DlibNode:
    name = s.string()
    f: dict = {}
    if name.startswith("con_"):
        if name not in ("con_4", "con_5", "con_6"):
            raise s.fail(f"unsupported layer version {name}")
        params = s.tensor().ravel()
        f["num_filters"] = s.int()
        f["nr"], f["nc"] = s.int(), s.int()
        f["stride_y"], f["stride_x"] = s.int(), s.int()
        f["padding_y"], f["padding_x"] = s.int(), s.int()
        fshape, bshape = s.alias_tensor(), s.alias_tensor()
        for _ in range(4):
            s.float()  # learning-rate / weight-decay multipliers
        use_bias = s.bool() if name in ("con_5", "con_6") else True
        if name == "con_6":
            s.bool()  # use_relu (fused relu, unused by this network)
        nf = int(np.prod(fshape))
        f["weight"] = params[:nf].reshape(fshape)
        f["bias"] = params[nf:nf + int(np.prod(bshape))].copy() if use_bias else None
    elif name in ("affine_", "affine_2"):
        params = s.tensor().ravel()
        gshape, bshape = s.alias_tensor(), s.alias_tensor()
        f["mode"] = s.int()
        if name == "affine_2":
            s.bool()  # disabled flag
        ng = int(np.prod(gshape))
        f["gamma"] = params[:ng].copy()
        f["beta"] = params[ng:ng + int(np.prod(bshape))].copy()
    elif name in ("fc_2", "fc_3"):
        f["num_outputs"], f["num_inputs"] = s.int(), s.int()
        params = s.tensor().ravel()
        wshape, bshape = s.alias_tensor(), s.alias_tensor()
        f["bias_mode"] = s.int()
        for _ in range(4):
            s.float()
        if name == "fc_3":
            s.bool()
        nw = int(np.prod(wshape))
        f["weight"] = params[:nw].reshape(wshape[0], wshape[1])  # (num_inputs, num_outputs)
        f["bias"] = params[nw:nw + int(np.prod(bshape))].copy() if f["bias_mode"] == 0 and bshape[0] else None
    elif name in ("max_pool_2", "avg_pool_2"):
        f["nr"], f["nc"] = s.int(), s.int()
        f["stride_y"], f["stride_x"] = s.int(), s.int()
        f["padding_y"], f["padding_x"] = s.int(), s.int()
    elif name == "relu_":
        pass
    elif name == "relu_2":
        f["disabled"] = s.bool()
    elif name == "add_prev_":
        pass
    else:
        raise s.fail(f"unsupported layer type '{name}'")
    return DlibNode(name, f)


def _is_input_next(s: _Stream) -> bool:
    n, end = s.peek_int()
    return s.data[end:end + n] == b"input_rgb_image_sized"


def _input(s: _Stream) -> DlibNode:
    name = s.string()
    if name != "input_rgb_image_sized":
        raise s.fail(f"unsupported input layer '{name}'")
    mean = (s.float(), s.float(), s.float())
    nr, nc = s.int(), s.int()
    return DlibNode("input", {"mean": mean, "nr": nr, "nc": nc})


def _subnet(s: _Stream, out: list[DlibNode]) -> None:
    version = s.int()
    if version == 1:  # add_tag_layer / add_skip_layer: version then sub-network
        out.append(DlibNode("tag_or_skip"))
        _subnet(s, out)
        return
    if version not in (2, 3):
        raise s.fail(f"unexpected layer version {version}")
    if _is_input_next(s):
        inp = _input(s)
        node = _details(s)
        for _ in range(3):
            s.bool()
        for _ in range(3):
            s.tensor()
        if version >= 3:
            s.int()
        out.append(node)
        out.append(inp)
        return
    pos = len(out)
    out.append(None)  # placeholder: details follow the sub-network in the file
    _subnet(s, out)
    out[pos] = _details(s)
    for _ in range(3):
        s.bool()
    for _ in range(3):
        s.tensor()


def read_dlib_network(path: Path) -> list[DlibNode]:
    """Parse a dlib ``loss_metric`` network file into a list of nodes, outermost (loss) first."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"dlib network file not found: {path}")
    s = _Stream(path.read_bytes(), path)
    version = s.int()
    if version != 1:
        raise s.fail(f"add_loss_layer version {version} (expected 1)")
    loss = s.string()
    fields = {}
    if loss == "loss_metric_2":
        fields = {"margin": s.float(), "dist_thresh": s.float()}
    elif loss != "loss_metric_":
        raise s.fail(f"unsupported loss layer '{loss}' (expected loss_metric_)")
    nodes = [DlibNode("loss_metric", fields)]
    _subnet(s, nodes)
    if s.pos != len(s.data):
        raise s.fail(f"{len(s.data) - s.pos} trailing bytes")
    return nodes
