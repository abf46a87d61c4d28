"""Training: losses, a tiny CPU run that lowers the loss, determinism, CLI outputs."""
import json

import pytest
import torch

from neurocomp.training import train as tr


def tiny_recipe(**over):
    r = {"name": "tiny", "model": {"builder": "plain", "kwargs": {"channels": [8, 16]}},
         "dataset": "digits", "timesteps": 4, "encoding": "bernoulli", "epochs": 4,
         "batch_size": 16, "lr": 0.02, "seed": 0}
    r.update(over)
    return r


def test_smse_and_tet_losses_by_hand():
    out = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])             # [T=2, B=1, K=2]
    y = torch.tensor([0])
    # rates (1, 0.5) vs one-hot (1, 0): ((0)^2 + 0.5^2) / 2
    assert tr.loss_fn(out, y, "smse", 2).item() == pytest.approx(0.125)
    ce0 = torch.log(1 + torch.exp(torch.tensor(-1.0))).item()    # CE([1,0], 0)
    ce1 = torch.log(torch.tensor(2.0)).item()                    # CE([1,1], 0)
    mse = 1 / 4                                                  # one zero among four outputs
    want = 0.9 * (ce0 + ce1) / 2 + 0.1 * mse
    assert tr.loss_fn(out, y, "tet", 2, tet_lambda=0.1).item() == pytest.approx(want, rel=1e-5)


def test_tiny_cpu_run_lowers_the_loss_and_is_deterministic():
    a = tr.train(tiny_recipe(), device="cpu", progress=False, save=False, limit=160)
    losses = [m["train_loss"] for m in a["metrics"]]
    assert losses[-1] < 0.8 * losses[0], losses
    b = tr.train(tiny_recipe(), device="cpu", progress=False, save=False, limit=160)
    assert [m["train_loss"] for m in b["metrics"]] == losses


def test_tet_loss_and_triangle_surrogate_train():
    r = tiny_recipe(loss="tet", model={"builder": "tcja", "kwargs": {
        "T": 4, "channels": [8, 16], "surrogate_name": "triangle"}})
    res = tr.train(r, device="cpu", progress=False, save=False, limit=96, epochs=3)
    losses = [m["train_loss"] for m in res["metrics"]]
    assert losses[-1] < losses[0], losses


def test_main_writes_checkpoint_metrics_and_card(tmp_path):
    from neurocomp.frontends.checkpoint import load_checkpoint
    recipe = tiny_recipe(name="tiny_events", dataset="events", encoding="events", timesteps=10,
                         epochs=1, dataset_kwargs={"n_train": 64, "n_test": 32,
                                                   "cache_dir": str(tmp_path / "cache")},
                         model={"builder": "ma", "kwargs": {"T": 10, "in_channels": 2,
                                                            "input_hw": 16, "num_classes": 4,
                                                            "channels": [4, 8]}})
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    assert tr.main([str(path), "--quiet", "--device", "cpu"]) == 0
    ck = load_checkpoint(str(tmp_path / "model.pt"))
    assert ck.timesteps == 10 and ck.encoding == "events" and ck.input_shape == (2, 16, 16)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1 and 0 <= metrics["epochs"][0]["test_acc"] <= 1
    card = (tmp_path / "card.md").read_text()
    assert "logistic-regression" in card and "python -m neurocomp.training.train" in card


def test_card_rewrite_keeps_marked_sections(tmp_path):
    res = {"recipe": tr.load_recipe(tiny_recipe()), "out_dir": tmp_path, "params": 7,
           "test_acc": 0.5, "metrics": [{"train_acc": 0.6}]}
    (tmp_path / "card.md").write_text("old text\n<!-- bench:begin -->\n| table |\n<!-- bench:end -->\n")
    card = tr.write_card(res).read_text()
    assert "old text" not in card and "50.00 %" in card
    assert card.count("<!-- bench:begin -->\n| table |\n<!-- bench:end -->") == 1
