"""Deep ensembles (``ctseg_lib.models.ensemble``, ``TrainConfig.ensemble``): exact mean softmax, training, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctseg_lib.checkpoint import build_model, load_checkpoint, load_model
from ctseg_lib.config import TrainConfig
from ctseg_lib.errors import CTSegError
from ctseg_lib.inference import predict_volume
from ctseg_lib.models import Ensemble, UNet
from ctseg_lib.training import train
from tests.conftest import write_msd
from tests.test_training import tiny_cfg


def test_softmax_of_the_output_is_the_mean_of_the_members_softmax():
    torch.manual_seed(0)
    members = [UNet(2, 1, 3, base_channels=4, depth=2).eval() for _ in range(3)]
    ens = Ensemble(members).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expect = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        got = torch.softmax(ens(x), 1)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)
    assert ens.size_divisor == members[0].size_divisor == 2
    # not simply one member: a different result from each of them
    assert all(not torch.allclose(got, torch.softmax(m(x), 1), atol=1e-4) for m in members)


def test_config_builds_an_ensemble_and_refuses_zero():
    cfg = tiny_cfg(ensemble=2)
    model = build_model(cfg, 3)
    assert isinstance(model, Ensemble) and len(model.members) == 2
    assert isinstance(build_model(tiny_cfg(), 3), UNet)
    with pytest.raises(CTSegError, match="ensemble"):
        TrainConfig.from_dict({"ensemble": 0})


def test_train_ensemble_writes_members_and_one_loadable_checkpoint(tmp_path):
    data = write_msd(tmp_path / "Task03_Liver", n=5, lps=(1,))
    res = train(tiny_cfg(ensemble=2), data, tmp_path / "run", quiet=True, device="cpu")
    for k in (0, 1):
        assert (tmp_path / "run" / f"member_{k}" / "best.pt").is_file()
    assert {r["member"] for r in res.history} == {0, 1}
    model, cfg, meta = load_model(tmp_path / "run" / "best.pt")
    assert isinstance(model, Ensemble) and cfg.ensemble == 2 and meta["num_classes"] == 3
    for k, member in enumerate(model.members):  # each member holds its own run's best weights
        want = load_checkpoint(tmp_path / "run" / f"member_{k}" / "best.pt")["model"]
        assert all(torch.equal(member.state_dict()[n], want[n]) for n in want)
    a, b = (m.state_dict() for m in model.members)
    assert any(not torch.equal(a[n], b[n]) for n in a), "members must differ (seeds seed, seed + 1)"
    m0 = load_checkpoint(tmp_path / "run" / "member_0" / "best.pt")
    m1 = load_checkpoint(tmp_path / "run" / "member_1" / "best.pt")
    assert m0["meta"]["split"] == m1["meta"]["split"] == meta["split"]
    assert (m0["config"]["seed"], m1["config"]["seed"]) == (0, 1)
    probs = predict_volume(model, np.zeros((16, 16, 3), np.float32))
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
