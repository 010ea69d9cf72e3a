#!/usr/bin/python3
"""PyTorch interop, both ways, checked end to end against an advtrain binary (docs/interop.md).

    /usr/bin/python3 tools/interop_check.py ADVTRAIN_BINARY TMP_DIR [--samples N] [--data DIR]

(i)   advtrain -> PyTorch: models trained by `advtrain fit` (seed-cnn and a custom spec) load into
      their nn.Module with load_state_dict(strict=True); on the first N Fashion-MNIST test images
      - the input advtrain computes on (`advtrain attack --eps 0 --out F.safetensors`, tensor x)
        equals torch's pixels / 255 bit for bit,
      - the logits equal those of the model exported by `advtrain export --c` (compiled with cc;
        tests/test_export_c.c holds that code to the library's logits) within 1e-4,
      - the per-sample predictions equal the library's own (adv_pred of the eps-0 attack),
      - the accuracy equals `advtrain eval --samples N --json` exactly, and its mean
        cross-entropy torch's within 1e-5 (relative).
(ii)  PyTorch -> advtrain: a smallcnn built in torch (torch.manual_seed, PyTorch's init, then a few
      SGD steps in torch) saved as safetensors with the advtrain metadata: the same four checks with
      `advtrain eval FILE` needing nothing else; and the same weights without metadata evaluated
      with `advtrain eval FILE --model smallcnn --data ...`.
(iii) fine-tuning: `advtrain fit --model smallcnn --weights TORCH_FILE` for 1 epoch on a small
      subset; the result loads back into torch (strict) and torch's accuracy equals advtrain's.
      Skipped, with a message, when this advtrain's fit has no --weights.
(iv)  BatchNorm models (resnet8, preact-resnet18:4, dscnn): trained by `advtrain fit`, they load
      into torch strictly, running statistics and num_batches_tracked (I64) included; trained in
      torch (train mode, so the running statistics move), saved with the metadata, advtrain
      evaluates them: the checks above, the logits through the exported C (BatchNorm folded).

Predictions are compared except where torch's top two logits are within 1e-4 (a tie that float
rounding may break either way); accuracies may differ by at most the number of such ties.
Exit 0: all checks passed; 1: a mismatch (the message says which); 77: torch is not importable or
the data set is missing (skip)."""
import argparse
import json
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"interop_check: skipped: {e} (Debian: apt-get install python3-torch)")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_eval import find, read_idx  # noqa: E402
from torch_models import (advtrain_metadata, build, load_advtrain, load_safetensors,  # noqa: E402
                          save_safetensors, smallcnn)

TIE = 1e-4      # top-2 logit margin below which a prediction is not compared
LOGIT_TOL = 1e-4
LOSS_TOL = 1e-5  # relative, on the mean cross-entropy of advtrain eval --json

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "m.h"
/* reads N samples of M_INPUT_SIZE float32 from argv[2], writes N x M_OUTPUTS logits to argv[3] */
int main(int argc, char **argv)
{
    static float x[M_INPUT_SIZE], z[M_OUTPUTS], scratch[M_SCRATCH_FLOATS];
    if (argc != 4) return 2;
    int n = atoi(argv[1]);
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    if (!in || !out) return 1;
    for (int i = 0; i < n; i++) {
        if (fread(x, sizeof x, 1, in) != 1) return 1;
        m_forward(x, z, scratch);
        if (fwrite(z, sizeof z, 1, out) != 1) return 1;
    }
    return fclose(out) != 0;
}
"""


class Mismatch(Exception):
    pass


class Checker:
    def __init__(self, cli, tmp, data_dir, n):
        self.cli, self.tmp, self.n = cli, tmp, n
        self.data_source = "fashion-mnist" if data_dir == "/usr/share/datasets/fashion-mnist" \
            else f"fashion-mnist:{data_dir}"
        images = read_idx(find(data_dir, "t10k-images-idx3-ubyte"))[:n]
        self.labels = torch.from_numpy(read_idx(find(data_dir, "t10k-labels-idx1-ubyte"))[:n].astype(np.int64))
        # the preprocessing advtrain uses: pixels / 255 in float32, nothing else, NCHW
        self.x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
        train = read_idx(find(data_dir, "train-images-idx3-ubyte"))[:2048]
        self.train_x = torch.from_numpy(train.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
        self.train_y = torch.from_numpy(read_idx(find(data_dir, "train-labels-idx1-ubyte"))[:2048].astype(np.int64))
        self.cc = os.environ.get("CC") or "cc"
        if not shutil.which(self.cc):
            self.cc = None
        self.passed = 0

    def run(self, *args):
        p = subprocess.run([self.cli, *args], capture_output=True, text=True)
        if p.returncode != 0:
            raise Mismatch(f"advtrain {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[:600]}")
        return p.stdout

    def ok(self, what):
        self.passed += 1
        print(f"  ok   {what}")

    def torch_side(self, model):
        with torch.no_grad():
            z = model(self.x)
        top2 = z.topk(2, dim=1).values
        ties = (top2[:, 0] - top2[:, 1]) < TIE
        return z, z.argmax(1), ties

    def compare(self, name, path, model, extra=(), logits=True):
        """The four checks of one model file; extra: advtrain flags for files without metadata;
        logits=False skips the exported C (not written yet for BatchNorm models)."""
        n = self.n
        z, pred, ties = self.torch_side(model)
        correct = int((pred == self.labels).sum())
        nties = int(ties.sum())

        # the library's input and per-sample predictions: an eps-0 attack changes nothing
        adv = os.path.join(self.tmp, f"{name}-eps0.safetensors")
        self.run("attack", path, *extra, "--attack", "fgsm", "--eps", "0", "--samples", str(n),
                 "--out", adv, "--grid", os.path.join(self.tmp, f"{name}.png"), "--threads", "1")
        out, _ = load_safetensors(adv)
        if not torch.equal(out["x"], self.x):
            diff = (out["x"] - self.x).abs().max().item()
            raise Mismatch(f"{name}: advtrain's input differs from torch's pixels/255 (max {diff:g})")
        if not torch.equal(out["labels"].long(), self.labels):
            raise Mismatch(f"{name}: advtrain's labels differ from the IDX file's")
        self.ok(f"{name}: advtrain's input is torch's pixels/255, bit for bit ({n} images)")
        lib_pred = out["adv_pred"].long()
        differ = (lib_pred != pred) & ~ties
        if differ.any():
            i = int(differ.nonzero()[0])
            raise Mismatch(f"{name}: {int(differ.sum())} predictions differ, first image {i}: "
                           f"advtrain {int(lib_pred[i])}, torch {int(pred[i])} (logits {z[i].tolist()})")
        self.ok(f"{name}: per-sample predictions equal the library's ({n - nties} compared, {nties} ties)")

        # logits: the C code advtrain exports from the same file
        if not logits:
            print(f"  skip {name}: logits (advtrain export does not write BatchNorm models yet)")
        elif extra:  # export has no --model; these weights' logits are checked with the metadata
            print(f"  skip {name}: logits (advtrain export needs the metadata)")
        elif self.cc is None:
            print(f"  skip {name}: logits (no C compiler: set CC)")
        else:
            gen = os.path.join(self.tmp, f"{name}-c")
            self.run("export", path, "--c", gen, "--prefix", "m")
            with open(os.path.join(gen, "driver.c"), "w") as f:
                f.write(DRIVER)
            exe = os.path.join(gen, "driver")
            p = subprocess.run([self.cc, "-std=c99", "-O2", "-I", gen, os.path.join(gen, "driver.c"),
                                os.path.join(gen, "m.c"), "-o", exe, "-lm"], capture_output=True, text=True)
            if p.returncode != 0:
                raise Mismatch(f"{name}: the exported C does not compile: {p.stderr[:600]}")
            xin, zout = os.path.join(gen, "x.bin"), os.path.join(gen, "z.bin")
            self.x.numpy().tofile(xin)
            subprocess.run([exe, str(n), xin, zout], check=True)
            zc = torch.from_numpy(np.fromfile(zout, dtype=np.float32)).reshape(z.shape)
            diff = (zc - z).abs().max().item()
            if not diff <= LOGIT_TOL:
                raise Mismatch(f"{name}: logits differ from advtrain's exported model by {diff:g} "
                               f"(tolerance {LOGIT_TOL:g})")
            self.ok(f"{name}: logits equal advtrain's within {LOGIT_TOL:g} (max |diff| {diff:.2g}, "
                    f"|logit| up to {z.abs().max().item():.3g})")

        # accuracy
        r = json.loads(self.run("eval", path, *extra, "--samples", str(n), "--json", "--threads", "1"))
        at = round(r["clean_accuracy"] * r["samples"])
        if r["samples"] != n or abs(at - correct) > nties:
            raise Mismatch(f"{name}: advtrain eval: {at}/{r['samples']} correct, torch {correct}/{n} "
                           f"({nties} ties)")
        self.ok(f"{name}: accuracy {100.0 * correct / n:.2f}% in both ({correct}/{n})")
        # the mean cross-entropy: every logit takes part in it
        loss = torch.nn.functional.cross_entropy(z.double(), self.labels).item()
        if not abs(r["loss"] - loss) <= LOSS_TOL * max(1.0, loss):
            raise Mismatch(f"{name}: advtrain eval's loss {r['loss']:.7g}, torch's {loss:.7g}")
        self.ok(f"{name}: mean cross-entropy {loss:.6f} in both (|diff| {abs(r['loss'] - loss):.2g})")
        return correct

    def fit(self, name, model, *flags, lr="0.05", subset="1000"):
        path = os.path.join(self.tmp, f"{name}.safetensors")
        self.run("fit", "--model", model, "--data", self.data_source, "--train-subset", subset,
                 "--epochs", "1", "--batch", "50", "--lr", lr, "--momentum", "0.9", "--seed", "3",
                 "--threads", "1", "--quiet", "--out", path, *flags)
        return path

    # (i)
    def advtrain_to_torch(self):
        print("(i) advtrain -> PyTorch")
        for name, arch in (("seed-cnn", "seed-cnn"),
                           ("spec", "conv:8:3:1:1,relu,maxpool:2,conv:16:3,leakyrelu:0.1,avgpool:2,"
                                    "dropout2d:0.1,flatten,linear:32,tanh,dropout:0.2,linear:10")):
            path = self.fit(name, arch)
            model, _ = load_advtrain(path)  # strict load_state_dict
            self.ok(f"{name}: load_state_dict(strict=True) into {type(model).__name__} "
                    f"({sum(p.numel() for p in model.parameters())} parameters)")
            self.compare(name, path, model)

    # (ii)
    def torch_to_advtrain(self):
        print("(ii) PyTorch -> advtrain")
        torch.manual_seed(0)
        model = smallcnn()  # PyTorch's default init
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for i in range(0, 2048, 64):  # a few steps, so that the accuracy means something
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(self.train_x[i:i + 64]), self.train_y[i:i + 64]).backward()
            opt.step()
        model.eval()
        with_meta = os.path.join(self.tmp, "torch-smallcnn.safetensors")
        bare = os.path.join(self.tmp, "torch-smallcnn-bare.safetensors")
        meta = advtrain_metadata("smallcnn", (1, 28, 28), self.data_source)
        try:
            from safetensors.torch import save_file
            save_file(model.state_dict(), with_meta, metadata=meta)
            save_file(model.state_dict(), bare)
            how = "safetensors.torch.save_file"
        except ImportError:
            save_safetensors(with_meta, model.state_dict(), meta)
            save_safetensors(bare, model.state_dict())
            how = "torch_models.save_safetensors"
        self.ok(f"torch smallcnn saved with {how}")
        correct = self.compare("torch-smallcnn", with_meta, model)
        self.compare("torch-smallcnn-bare", bare, model, ("--model", "smallcnn", "--data", self.data_source))
        return model, bare, correct

    # (iii)
    def fine_tune(self, start_model, start_path):
        print("(iii) fine-tuning PyTorch weights with advtrain fit --weights")
        p = subprocess.run([self.cli, "fit", "--help"], capture_output=True, text=True)
        if "--weights" not in p.stdout + p.stderr:
            print("  skip fine-tuning: this advtrain's fit has no --weights")
            return
        path = self.fit("finetuned", "smallcnn", "--weights", start_path, lr="0.01")
        model, meta = load_advtrain(path)
        if meta.get("advtrain.arch") != "smallcnn":
            raise Mismatch(f"fine-tuned file: advtrain.arch is {meta.get('advtrain.arch')!r}")
        self.ok("the fine-tuned file loads into torch's smallcnn (strict)")
        # it started from the torch weights: small steps away from them, not a fresh init
        w0 = torch.cat([t.flatten() for t in start_model.state_dict().values()])
        w1 = torch.cat([t.flatten() for t in model.state_dict().values()])
        moved = ((w1 - w0).norm() / w0.norm()).item()
        if not 0 < moved < 0.5:
            raise Mismatch(f"fine-tuned weights moved {moved:.3g} (relative) from the --weights file: "
                           "expected a small nonzero change (was the file used?)")
        self.ok(f"fine-tuning started from the torch weights (relative change {moved:.3f}; a fresh init is ~1.4)")
        self.compare("finetuned", path, model)


    # (iv)
    def batchnorm_models(self):
        print("(iv) BatchNorm, residual and depthwise models, both ways (buffers included)")
        for arch in ("resnet8", "preact-resnet18:4", "dscnn"):
            name = arch.replace(":", "-w")
            path = self.fit(name, arch, subset="400")
            model, _ = load_advtrain(path)  # strict: parameters and buffers
            tracked = [int(b) for n, b in model.named_buffers() if n.endswith("num_batches_tracked")]
            if set(tracked) != {8}:  # 400 images in batches of 50
                raise Mismatch(f"{name}: num_batches_tracked {sorted(set(tracked))}, expected 8")
            self.ok(f"{name}: load_state_dict(strict=True) with {len(list(model.buffers()))} buffers, "
                    "num_batches_tracked 8 after 8 steps")
            self.compare(name, path, model)
            torch.manual_seed(1)
            theirs = build(arch, 1, 28)
            opt = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
            theirs.train()
            for i in range(0, 512, 64):  # torch's own training moves weights and running statistics
                opt.zero_grad()
                torch.nn.functional.cross_entropy(theirs(self.train_x[i:i + 64]), self.train_y[i:i + 64]).backward()
                opt.step()
            theirs.eval()
            tpath = os.path.join(self.tmp, f"torch-{name}.safetensors")
            save_safetensors(tpath, theirs.state_dict(), advtrain_metadata(arch, (1, 28, 28), self.data_source))
            self.compare(f"torch-{name}", tpath, theirs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("advtrain")
    ap.add_argument("tmp")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--skip-batchnorm", action="store_true", help="skip part (iv)")
    a = ap.parse_args()
    try:
        find(a.data, "t10k-images-idx3-ubyte")
        find(a.data, "train-images-idx3-ubyte")
    except FileNotFoundError as e:
        print(f"interop_check: skipped: no Fashion-MNIST ({e}; apt-get install dataset-fashion-mnist)")
        return 77
    torch.set_num_threads(1)
    os.makedirs(a.tmp, exist_ok=True)
    c = Checker(os.path.abspath(a.advtrain), a.tmp, a.data, a.samples)
    print(f"interop_check: torch {torch.__version__}, {a.advtrain}, {a.samples} test images")
    try:
        c.advtrain_to_torch()
        model, bare, _ = c.torch_to_advtrain()
        c.fine_tune(model, bare)
        if not a.skip_batchnorm:
            c.batchnorm_models()
    except Mismatch as e:
        print(f"interop_check: MISMATCH: {e}", file=sys.stderr)
        print(f"interop_check: {c.passed} passed, 1 failed")
        return 1
    print(f"interop_check: {c.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
