"""PyTorch equivalents of advtrain's built-in models, and a safetensors reader/writer that needs
only the standard library and torch (Debian's python3-torch has no `safetensors` package).

The state_dict names and shapes match advtrain's model files exactly, so
`model.load_state_dict(load_safetensors(path))` works in both directions."""
import json
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


class SeedMLP(nn.Module):
    """The tutorial's MLP: fc2(fc1(x)), no activation in between."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        return self.fc2(self.fc1(x.flatten(1)))


class SeedCNN(nn.Module):
    """The tutorial's LeNet; conv1 pads 28x28 inputs so the flattened size stays 16*5*5."""

    def __init__(self, channels=1, size=28):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=(32 - size) // 2)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                         nn.ReLU(), nn.Linear(128, 10))


def smallcnn():
    return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10))


class _ResNet8Stack(nn.Module):
    """One stack of MLPerf Tiny's ResNet-8: conv-bn-relu-conv-bn plus the input (or its 1x1
    stride-2 projection, without BN as in MLPerf's model), then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, 0)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.shortcut(x) if hasattr(self, "shortcut") else x))


class ResNet8(nn.Module):
    """advtrain's resnet8 (src/models/resnet.c): MLPerf Tiny's image-classification ResNet-8."""

    def __init__(self, channels=1, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _ResNet8Stack(16, 16, 1)
        self.layer2 = _ResNet8Stack(16, 32, 2)
        self.layer3 = _ResNet8Stack(32, 64, 2)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class PreActBlock(nn.Module):
    """Wong et al.'s PreActBlock (fast_adversarial, preact_resnet.py)."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """advtrain's preact-resnet18[:W]: PreActResNet18 with first-stage width W (64 = the paper)."""

    def __init__(self, channels=1, width=64, classes=10):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(2 * width, 2)
        self.layer3 = self._make_layer(4 * width, 2)
        self.layer4 = self._make_layer(8 * width, 2)
        self.bn = nn.BatchNorm2d(8 * width)
        self.linear = nn.Linear(8 * width, classes)

    def _make_layer(self, planes, stride):
        blocks = [PreActBlock(self.in_planes, planes, stride), PreActBlock(planes, planes, 1)]
        self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class _DSBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.dw = nn.Conv2d(ch, ch, 3, 1, 1, groups=ch, bias=False)
        self.bn_dw = nn.BatchNorm2d(ch)
        self.pw = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(ch)

    def forward(self, x):
        return F.relu(self.bn_pw(self.pw(F.relu(self.bn_dw(self.dw(x))))))


class DSCNN(nn.Module):
    """advtrain's dscnn (src/models/dscnn.c): MLPerf Tiny's DS-CNN shape on images."""

    def __init__(self, channels=1, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.blocks = nn.ModuleList([_DSBlock(64) for _ in range(4)])
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.dropout(F.relu(self.bn1(self.conv1(x))), 0.2, self.training)
        for block in self.blocks:
            x = block(x)
        x = F.dropout(x, 0.4, self.training)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build(arch, channels=1, size=28):
    if arch == "resnet8":
        return ResNet8(channels)
    if arch == "preact-resnet18" or arch.startswith("preact-resnet18:"):
        return PreActResNet18(channels, int(arch.split(":")[1]) if ":" in arch else 64)
    if arch == "dscnn":
        return DSCNN(channels)
    if arch == "seed-mlp":
        return SeedMLP()
    if arch == "seed-cnn":
        return SeedCNN(channels, size)
    if arch == "mlp":
        return mlp()
    if arch == "smallcnn":
        return smallcnn()
    raise ValueError(f"no PyTorch equivalent written for architecture {arch!r}")


def load_safetensors(path):
    """Returns (state_dict of float32 tensors, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    dtypes = {"F32": torch.float32, "I64": torch.int64}  # I64: BatchNorm's num_batches_tracked
    for name, info in header.items():
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32 or I64")
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtypes[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, meta


def save_safetensors(path, tensors, metadata=None):
    """Writes a state_dict in the safetensors format: float tensors as F32, integer ones (BatchNorm's
    num_batches_tracked) as I64."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name, t in tensors.items():
        integer = not t.is_floating_point()
        b = t.detach().to(torch.int64 if integer else torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "I64" if integer else "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in chunks:
            f.write(b)


# --- interop helpers (docs/interop.md) ---------------------------------------------------------

class _FlattenLinear(nn.Linear):
    """A Linear placed straight after an image-shaped layer: advtrain flattens implicitly there
    (C, H, W order, as x.flatten(1)); the parameters are a plain Linear's."""

    def forward(self, x):
        return super().forward(x.flatten(1))


def from_spec(spec, channels=1, height=28, width=None):
    """nn.Sequential for an advtrain spec such as 'conv:16:4:2:1,relu,flatten,linear:10'
    (docs/architectures.md): layer i is module i, so the state_dict names match the model file."""
    width = height if width is None else width
    shape = [channels, height, width]  # None once flat
    flat = None
    layers = []
    for token in spec.split(","):
        word, *args = token.strip().split(":")
        num = [float(a) for a in args]
        ints = [int(v) for v in num]
        if word == "conv":
            out, k = ints[0], ints[1]
            stride = ints[2] if len(ints) > 2 else 1
            pad = ints[3] if len(ints) > 3 else 0
            if shape is None:
                raise ValueError(f"{spec!r}: conv after flatten")
            layers.append(nn.Conv2d(shape[0], out, k, stride=stride, padding=pad))
            shape = [out, (shape[1] + 2 * pad - k) // stride + 1, (shape[2] + 2 * pad - k) // stride + 1]
        elif word in ("maxpool", "avgpool"):
            k = ints[0]
            stride = ints[1] if len(ints) > 1 else k
            pad = ints[2] if len(ints) > 2 else 0
            if shape is None:
                raise ValueError(f"{spec!r}: {word} after flatten")
            pool = nn.MaxPool2d if word == "maxpool" else nn.AvgPool2d
            layers.append(pool(k, stride, pad))
            shape = [shape[0], (shape[1] + 2 * pad - k) // stride + 1, (shape[2] + 2 * pad - k) // stride + 1]
        elif word == "linear":
            if shape is not None:  # straight after an image-shaped layer: implicit flatten
                flat = shape[0] * shape[1] * shape[2]
                layers.append(_FlattenLinear(flat, ints[0]))
                shape = None
            else:
                layers.append(nn.Linear(flat, ints[0]))
            flat = ints[0]
        elif word == "flatten":
            layers.append(nn.Flatten())
            if shape is not None:
                flat, shape = shape[0] * shape[1] * shape[2], None
        elif word == "relu":
            layers.append(nn.ReLU())
        elif word == "leakyrelu":
            layers.append(nn.LeakyReLU(num[0] if num else 0.01))
        elif word == "tanh":
            layers.append(nn.Tanh())
        elif word == "sigmoid":
            layers.append(nn.Sigmoid())
        elif word == "dropout":
            layers.append(nn.Dropout(num[0] if num else 0.5))
        elif word == "dropout2d":
            layers.append(nn.Dropout2d(num[0] if num else 0.5))
        else:
            raise ValueError(f"{spec!r}: unknown layer {token!r}")
    return nn.Sequential(*layers)


def module_for(arch, channels=1, height=28, width=None):
    """The nn.Module for a built-in model name or a spec (the advtrain.arch metadata value)."""
    if arch in ("seed-mlp", "seed-cnn", "mlp", "smallcnn", "resnet8", "dscnn") or \
            arch.startswith("preact-resnet18"):
        return build(arch, channels, height)
    return from_spec(arch, channels, height, width)


def load_advtrain(path, arch=None, input_shape=None):
    """Loads a model file into its nn.Module (load_state_dict, strict) in eval mode.

    The architecture and input shape come from the file's metadata (advtrain.arch,
    advtrain.input); pass them for files without it. Returns (model, metadata)."""
    state, meta = load_safetensors(path)
    arch = arch or meta["advtrain.arch"]
    c, h, w = input_shape or (int(v) for v in meta["advtrain.input"].split(","))
    model = module_for(arch, c, h, w)
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def advtrain_metadata(arch, input_shape=(1, 28, 28), data="fashion-mnist"):
    """The safetensors metadata that makes a PyTorch state_dict a complete advtrain model file:
    save_safetensors(path, model.state_dict(), advtrain_metadata("smallcnn")), or
    safetensors.torch.save_file(model.state_dict(), path, metadata=advtrain_metadata(...))."""
    return {"format": "pt", "advtrain.arch": arch,
            "advtrain.input": ",".join(str(int(v)) for v in input_shape), "advtrain.data": data}
