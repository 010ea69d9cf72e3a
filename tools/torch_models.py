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


def build(arch, channels=1, size=28):
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
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32)
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, meta


def save_safetensors(path, tensors, metadata=None):
    """Writes float32 tensors (a state_dict) in the safetensors format."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in chunks:
            f.write(b)
