"""model=external: a user's network, defined in a package outside audiocert (a temporary directory on PYTHONPATH),
trained, certified, attacked, measured and reported through the real CLI on a folder dataset of real FLAC/WAV
files; its refusals (unknown class, wrong arguments, weights of another shape, other class names, a smoothing
stage after its input) in one line before anything is written; and a user's wrapper of the ResCNN certifies
exactly what the built-in ResCNN certifies (the same counts, bit for bit, on CPU), also with its classes listed in
another order."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import certify_overrides, read_certs, run_cli
from test_folder_dataset import export_folder

USER_PACKAGE = '''
"""A user's networks: nothing here is audiocert's, except the ResCNN the wrapper wraps."""
import torch
from torch import nn

from audiocert.model import ResCNN


class WrappedResCNN(nn.Module):
    """The built-in ResCNN as a user would wrap it: it takes the mfbe stage (B, T, 64)."""

    def __init__(self, num_classes, widths, embedding_dim=16, bn_momentum=0.3):
        super().__init__()
        self.inner = ResCNN(num_classes=num_classes, widths=widths, embedding_dim=embedding_dim,
                            bn_momentum=bn_momentum)

    def forward(self, x):
        return self.inner(x.unsqueeze(-3))


class WaveNet(nn.Module):
    """A waveform model with its own log-mel front end (torchaudio), so attacks differentiate through it."""

    def __init__(self, num_classes, channels=8, sample_rate=16000):
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=400, hop_length=160, n_mels=32)
        self.net = nn.Sequential(nn.Conv1d(32, channels, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                                 nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, waveform):
        return self.net(torch.log(self.mel(waveform) + 1e-6))
'''


@pytest.fixture(scope="module")
def user(tiny_corpus, tmp_path_factory) -> dict:
    """The user's package (outside audiocert, on PYTHONPATH only), a folder dataset of FLAC and WAV files."""
    base = tmp_path_factory.mktemp("user")
    (base / "userpkg" / "usernets").mkdir(parents=True)
    (base / "userpkg" / "usernets" / "__init__.py").write_text(textwrap.dedent(USER_PACKAGE))
    folder = export_folder(tiny_corpus, base / "folder")
    return {"base": base, "folder": folder, "runs": base / "runs", "pythonpath": str(base / "userpkg")}


def user_cli(user: dict, args: list[str], check: bool = True):
    """The real CLI with the user's package on PYTHONPATH (as a user runs it)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (user["pythonpath"], old) if p)
    try:
        return run_cli(args, user["runs"], check=check)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def folder_args(user: dict) -> list[str]:
    return ["dataset=folder", f"dataset.root={user['folder']}", "dataset.crop_samples=16000",
            "dataset.train_crops_per_speaker=32", "dataset.test_crops_per_speaker=2", "model=external",
            "model.net._target_=usernets.WaveNet", "+model.net.num_classes=4", "logger.mode=disabled"]


SMALL = ["certify.points_per_speaker=2", "certify.n0=20", "certify.n=60", "certify.shard.examples=4",
         "certify.shard.samples=30", "certify.batch_size=50", "representation=waveform", "smoothing.sigma=0.05",
         "sweep.name=user", "launcher=debug"]


@pytest.fixture(scope="module")
def trained_user_model(user) -> Path:
    user_cli(user, ["train", *folder_args(user), "train.epochs=2",
                    "train.batch_size=16", "train.validation_crops_per_speaker=2", "train.augment.stage=waveform",
                    "train.augment.sigma=0.05"])
    best = user["runs"] / "train" / "folder-external" / "best.pt"
    assert best.is_file()
    return best


@pytest.mark.slow
def test_user_model_certified_attacked_measured_and_reported(user, trained_user_model):
    certified = user_cli(user, ["certify", *folder_args(user), *SMALL])
    assert "certified folder-waveform-sigma0.05: 8 points" in certified.stdout + certified.stderr
    [config_dir] = (user["runs"] / "sweeps" / "user").glob("folder-waveform-*")
    plan = json.loads((config_dir / "plan.json").read_text())
    weights = trained_user_model.read_bytes()
    import hashlib

    assert plan["quantities"]["model"] == {"target": "usernets.WaveNet", "args": {"num_classes": 4},
                                           "input": "waveform", "classes": None}
    assert plan["quantities"]["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    provenance = json.loads((config_dir / "provenance.json").read_text())
    assert provenance["model"]["target"] == "usernets.WaveNet" and provenance["weights_sha256"] == \
        hashlib.sha256(weights).hexdigest()
    assert {p.parts[-3] for p in map(Path, (i["path"] for i in plan["inputs"]))} == {
        p.name for p in user["folder"].iterdir()}
    attack = ["attack.steps=2", "attack.samples=4", "attack.n=30", "attack.eps=[0.05]", "attack.batch_size=8",
              "attack.points_per_speaker=1"]
    attacked = user_cli(user, ["attack", *folder_args(user), *SMALL, *attack, "attack.space=waveform"])
    assert "4 points attacked at 1 budget(s) (waveform space)" in attacked.stdout + attacked.stderr
    percept = ["perceptibility.draws=2", "perceptibility.budget_iterations=8", "perceptibility.radii=[0.01]",
               "perceptibility.attack.enabled=false", "perceptibility.points_per_speaker=1"]
    measured = user_cli(user, ["perceptibility", *folder_args(user), *SMALL, *percept])
    assert "4 points measured" in measured.stdout + measured.stderr
    user_cli(user, ["report", str(user["runs"] / "sweeps" / "user")])
    report = (user["runs"] / "sweeps" / "user" / "report" / "report.md").read_text()
    assert "- **Model:** usernets.WaveNet(num_classes=4), a user's network whose input is the 'waveform' stage" \
        in report


@pytest.mark.slow
@pytest.mark.parametrize("override, needle", [
    ("model.net._target_=usernets.Missing", "audiocert certify: model.net._target_=usernets.Missing: cannot be "
                                            "instantiated"),
    ("+model.net.depth=3", "audiocert certify: model.net._target_=usernets.WaveNet: cannot be instantiated with "
                           "arguments {'num_classes': 4, 'depth': 3}"),
    ("+model.net.channels=5", "audiocert certify: model.weights="),
    ("model.classes=[spk1,spk2,spk3,spk4]", "audiocert certify: model.classes does not match the dataset's labels"),
    ("representation=mfbe", "audiocert certify: representation.stage='mfbe' comes after model.input=waveform"),
    ("model.input=magspec", "audiocert certify: model.input=magspec: model.net._target_=usernets.WaveNet fails on a "
                            "batch of that stage, shape (2, 99, 257)"),
    ("+model.net.num_classes=5", "audiocert certify: model.net._target_=usernets.WaveNet: returns logits of shape "
                                 "(2, 5) for 2 examples, but the dataset has 4 classes"),
])
def test_refused_in_one_line_before_anything_is_written(user, trained_user_model, override, needle):
    small = [a.replace("sweep.name=user", "sweep.name=refused") for a in SMALL
             if not (override.startswith("representation=") and a.startswith("representation="))]
    given = [a for a in folder_args(user) if a.split("=")[0] != override.split("=")[0]]  # the override replaces it
    if override.startswith("+model.net.num_classes"):  # a network of 5 outputs, with weights of its own shape
        net = user_cli(user, ["train", *[a for a in given if not a.startswith("logger")], override,
                              "train.epochs=1", "model.name=five", "dataset.num_classes=4"], check=False)
        assert net.returncode == 1 and "returns logits of shape (2, 5)" in net.stderr  # train refuses it too
        import sys

        sys.path.insert(0, user["pythonpath"])
        try:
            from usernets import WaveNet
        finally:
            sys.path.remove(user["pythonpath"])
        torch.save(WaveNet(5).state_dict(), user["base"] / "five.pt")
        given.append(f"model.weights={user['base'] / 'five.pt'}")
    result = user_cli(user, ["certify", *given, *small, override], check=False)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(needle), line
    if "weights" in needle:
        assert "does not fit model.net._target_=usernets.WaveNet" in line and "size mismatch" in line
    assert not (user["runs"] / "sweeps" / "refused").exists()


@pytest.mark.slow
def test_wrapped_rescnn_certifies_exactly_what_the_builtin_does(trained, user, tmp_path):
    """The same data, stage, sigma and seed: the user's wrapper of the trained ResCNN gets the built-in's counts;
    listing its classes in another order (and permuting the head's rows to match) changes nothing either."""
    state = torch.load(trained["dir"] / "best.pt", weights_only=True)
    weights = tmp_path / "wrapped.pt"
    torch.save({f"inner.{k}": v for k, v in state["model"].items()}, weights)
    speakers = [str(s) for s in state["speakers"]]
    permutation = [2, 0, 3, 1]  # model output j is dataset class permutation[j]
    permuted = {f"inner.{k}": v for k, v in state["model"].items()}
    for key in ("inner.head.1.weight", "inner.head.1.bias"):
        permuted[key] = permuted[key][permutation]
    permuted_path = tmp_path / "permuted.pt"
    torch.save(permuted, permuted_path)
    common = ["representation=magspec", "smoothing.sigma=0.25", "launcher=debug"]
    external = ["model=external", "model.net._target_=usernets.WrappedResCNN", "+model.net.num_classes=4",
                "+model.net.widths=[4,8,8,16]", "model.input=mfbe"]
    builtin = certify_overrides(trained, "wrap-builtin", *common)
    run_cli(["certify", *builtin], trained["runs"])
    dataset = [o for o in builtin if o.startswith("dataset.")]
    rest = [o for o in certify_overrides(trained, "wrap-external", *common) if not o.startswith(("model.", "dataset."))]
    user_cli({**user, "runs": trained["runs"]}, ["certify", *dataset, *rest, *external, f"model.weights={weights}"])
    reordered = [o.replace("wrap-external", "wrap-permuted") for o in rest]
    classes = "[" + ",".join(speakers[j] for j in permutation) + "]"
    user_cli({**user, "runs": trained["runs"]}, ["certify", *dataset, *reordered, *external,
                                                 f"model.weights={permuted_path}", f"model.classes={classes}"])
    sweeps = trained["runs"] / "sweeps"
    [a] = (sweeps / "wrap-builtin").glob("tiny4-magspec-*")
    [b] = (sweeps / "wrap-external").glob("tiny4-magspec-*")
    [c] = (sweeps / "wrap-permuted").glob("tiny4-magspec-*")
    assert a.name != b.name != c.name  # the external model's module, args and weights are in the config hash
    assert read_certs(a) == read_certs(b) == read_certs(c)
    counts = [sorted((s["index"], json.dumps(s["counts"], sort_keys=True), s["input_digests"], s["stage_norms"])
                     for s in (json.loads(p.read_text()) for p in (d / "shards").glob("*.json")))
              for d in (a, b, c)]
    assert counts[0] == counts[1] == counts[2] and counts[0]


def test_class_names_are_matched_by_name_and_a_file_lists_them(tmp_path):
    from audiocert.external import class_order, read_classes

    assert class_order(["b", "a", "c"], ["a", "b", "c"]) == [1, 0, 2]
    assert class_order(["a", "b"], ["a", "b"]) is None and class_order(None, ["a", "b"]) is None
    with pytest.raises(ValueError, match=r"the dataset's \['c'\] are not among model.classes; model.classes \['d'\]"):
        class_order(["a", "b", "d"], ["a", "b", "c"])
    names = tmp_path / "classes.txt"
    names.write_text("yes\nno\n\nup\n")
    assert read_classes(str(names)) == ["yes", "no", "up"]
    with pytest.raises(ValueError, match="must name each class once"):
        read_classes(["a", "a"])


def test_the_chain_stops_at_the_model_input_and_matches_the_frontend():
    from audiocert.external import ChainFrontend, ExternalClassifier
    from audiocert.frontend import DeepSpeakerFrontend

    frontend = DeepSpeakerFrontend()
    waveform = torch.randn(2, 25840) * 0.1
    chain = ChainFrontend(frontend, "magspec")
    assert torch.equal(chain(waveform), frontend.to_stage(waveform, "magspec"))
    assert torch.equal(chain.from_stage(chain.to_stage(waveform, "waveform"), "waveform"), chain(waveform))
    with pytest.raises(ValueError, match="representation.stage=mfbe comes after model.input=magspec"):
        chain.to_stage(waveform, "mfbe")
    mfbe = ChainFrontend(frontend, "mfbe")
    assert torch.equal(mfbe.from_stage(frontend.to_stage(waveform, "magspec"), "magspec").unsqueeze(-3),
                       frontend.from_stage(frontend.to_stage(waveform, "magspec"), "magspec"))
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    reordered = ExternalClassifier(torch.nn.Identity(), [2, 0, 1])(logits)
    assert reordered.tolist() == [[3.0, 1.0, 2.0]]
