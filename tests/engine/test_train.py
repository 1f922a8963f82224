"""Training end to end on tiny synthetic data, then predict and evaluate what it wrote."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from refinemask import build_model
from refinemask.cli import main
from refinemask.config import load_config
from refinemask.model_files import save_weights
from refinemask.tensor_files import read_checkpoint
from refinemask.engine.distributed import init_distributed
from refinemask.engine.predict import Predictor
from refinemask.engine.train import Trainer, seed_everything, train
from refinemask.engine.training_checkpoints import find_last_checkpoint
from refinemask.errors import RefineMaskError
from refinemask.modeling.detector import build_model_from_config
from tests.tiny_runs import run_cli, write_config
from tests.scratch import scratch_dir


def test_training_writes_checkpoints_final_weights_logs_and_metrics(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.yaml", "checkpoint_0000002.pth", "checkpoint_0000003.pth", "last_checkpoint",
            "model_final.safetensors", "model_final.yaml", "metrics.json", "log.txt"} <= names
    assert any((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    assert find_last_checkpoint(trained_run).name == "checkpoint_0000003.pth"
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"segm", "bbox", "boundary", "boundary@0.008"} <= set(metrics)
    description = (trained_run / "model_final.yaml").read_text()
    assert description.startswith("# What model_final.safetensors holds") and "not a run config" in description
    assert set(yaml.safe_load(description)) == {"model", "category_names"}


def test_the_log_reports_the_learning_rate_scaled_to_the_total_batch(trained_run):
    log = (trained_run / "log.txt").read_text()
    # 1 image x 1 process x 2 accumulation steps = 2 images; 0.02 for 16 -> 0.0025
    assert "= 2 images per iteration" in log
    assert "learning rate: 0.0025 (base 0.02 for a batch of 16, scaled linearly to 2)" in log
    assert "iter 3/3" in log and "loss_" not in log.split("iter 3/3")[1].splitlines()[0]


def test_a_checkpoint_holds_the_whole_training_state_and_loads_with_weights_only(trained_run):
    path = trained_run / "checkpoint_0000002.pth"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint) == set(read_checkpoint(path))
    assert checkpoint["iteration"] == 2 and checkpoint["format"] == "refinemask-train-v1"
    assert {"model", "optimizer", "scheduler", "config", "label_to_category", "category_names", "epoch", "position"} <= set(checkpoint)
    assert checkpoint["label_to_category"] == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert checkpoint["category_names"][0] == "stroke"
    (rng,) = checkpoint["rng"]  # one process
    assert isinstance(rng["torch"], torch.Tensor) and isinstance(rng["numpy"]["keys"], torch.Tensor)
    assert isinstance(rng["python"]["state"], torch.Tensor) and isinstance(rng["numpy"]["pos"], int)
    assert checkpoint["scheduler"]["last_epoch"] == 2


def test_final_weights_match_the_last_checkpoint(trained_run):
    final = load_file(str(trained_run / "model_final.safetensors"))
    last = read_checkpoint(trained_run / "checkpoint_0000003.pth")["model"]
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)


def test_predict_cli_writes_an_overlay_and_coco_results_per_image(trained_run, tmp_path):
    images = trained_run / "synthetic_data" / "images"
    out = tmp_path / "predictions"
    inputs = [str(images / "val_000000.png"), str(images / "val_000001.png")]
    assert main(["predict", "--weights", str(trained_run / "model_final.safetensors"), *inputs,
                 "--out", str(out), "--score-thresh", "0.0"]) == 0
    for name in ("val_000000.png", "val_000001.png"):
        overlay = Image.open(out / name)
        assert overlay.size == (768, 768) and overlay.mode == "RGB"  # 64 px enlarged 12 times, to be read
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} == {1, 2} and len(results) == 10  # 5 detections each
    assert all(set(r) >= {"bbox", "score", "segmentation", "category_id", "file_name"} for r in results)
    assert all(isinstance(r["segmentation"]["counts"], str) and 1 <= r["category_id"] <= 5 for r in results)


def test_predict_says_when_an_image_has_no_detection_above_the_threshold(trained_run, tmp_path, capsys):
    weights = trained_run / "model_final.safetensors"
    image = trained_run / "synthetic_data" / "images" / "val_000000.png"
    best = float(Predictor(weights, score_thresh=0.0)(image)["scores"].max())  # every detection
    assert best < 0.99
    assert main(["predict", "--weights", str(weights), str(image), "--out", str(tmp_path), "--score-thresh", "0.99"]) == 0
    out = capsys.readouterr().out
    suggested = math.floor(best * 100) / 100
    assert (f"{image}: no detection scoring at least 0.99; the best box scored {math.floor(best * 1000) / 1000:.3f} "
            f"(--score-thresh {suggested:g} shows it)") in out
    assert json.loads((tmp_path / "results.json").read_text()) == []
    shown = Predictor(weights, score_thresh=suggested)(image)
    assert len(shown["scores"]) >= 1 and float(shown["scores"].max()) == best


def test_predictor_takes_paths_pil_images_arrays_and_tensors_alike(trained_run):
    predictor = Predictor(trained_run / "model_final.safetensors", score_thresh=0.0)
    path = trained_run / "synthetic_data" / "images" / "val_000000.png"
    pil = Image.open(path).convert("RGB")
    array = np.asarray(pil)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    results = predictor([path, pil, array, tensor])
    reference = results[0]
    assert reference["masks"].dtype == torch.bool and reference["masks"].shape[1:] == (64, 64)
    for other in results[1:]:
        assert torch.equal(other["labels"], reference["labels"]) and torch.equal(other["masks"], reference["masks"])
    single = predictor(str(path))
    assert isinstance(single, dict) and torch.equal(single["boxes"], reference["boxes"])
    strict = Predictor(predictor.model, score_thresh=1.0)(path)
    assert len(strict["scores"]) == 0 and strict["masks"].shape == (0, 64, 64)


def test_eval_cli_evaluates_the_weights_with_the_config(trained_run, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    status = main(["eval", str(trained_run / "config.yaml"), "train.progress_bar=false",
                   "--weights", str(trained_run / "model_final.safetensors"), "--out", str(out)])
    assert status == 0
    metrics = json.loads(out.read_text())
    assert metrics == json.loads((trained_run / "metrics.json").read_text())  # same as at the end of training
    assert "boundary@0.008" in capsys.readouterr().out


def test_weights_for_another_number_of_classes_fail_in_one_line(trained_run, tmp_path, capsys):
    other = save_weights(build_model(num_classes=3, backbone="resnet18"), tmp_path / "three_classes.safetensors")
    status = main(["eval", str(trained_run / "config.yaml"), "--weights", str(other)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    # the model is built from the weights' own settings: the class count is what differs
    assert "predicts 3 classes but" in err and "has 5 categories: a different number of classes" in err


@pytest.mark.parametrize("name, content", [("passwd", b"root:x:0:0:root:/root:/bin/bash\n"), ("model.pth", b"")])
def test_a_file_that_is_no_model_is_named_so_in_one_line(trained_run, tmp_path, capsys, name, content):
    # as `refinemask eval CONFIG --weights /etc/passwd`: torch.load's own error for a text
    # file is "list index out of range"
    path = tmp_path / name
    path.write_bytes(content)
    status = main(["eval", str(trained_run / "config.yaml"), "--weights", str(path)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert f"{path}: not a refinemask weights or checkpoint file" in err


@pytest.fixture(scope="module")
def run_with_a_long_warmup(tmp_path_factory, synthetic_data) -> str:
    """What `refinemask train` prints (stdout and stderr) for 2 iterations with a 30-iteration warmup."""
    with scratch_dir(tmp_path_factory, "warmup") as root:
        config = write_config(root / "run.yaml", synthetic_data, root / "out", solver={"max_iters": 2, "warmup_iters": 30})
        done = run_cli("train", str(config))
        assert done.returncode == 0, done.stderr[-2000:]
        yield done.stdout + done.stderr


def test_a_warmup_longer_than_the_schedule_warns_once_at_the_start(run_with_a_long_warmup):
    lines = run_with_a_long_warmup.splitlines()
    warnings = [i for i, line in enumerate(lines) if "solver.warmup_iters=30 is not shorter than the whole schedule" in line]
    assert len(warnings) == 1
    assert "(2 iterations)" in lines[warnings[0]] and "lower solver.warmup_iters" in lines[warnings[0]]
    first_step = next(i for i, line in enumerate(lines) if "iter 1/2" in line)
    assert warnings[0] < first_step


def test_train_names_the_final_weights_once_at_the_end(run_with_a_long_warmup):
    lines = [line for line in run_with_a_long_warmup.splitlines() if line.strip()]
    named = [line for line in lines if "final weights:" in line]
    assert len(named) == 1 and named[0].endswith("model_final.safetensors")
    assert lines[-1] == named[0]


def test_a_missing_dataset_path_fails_in_one_line(tmp_path, synthetic_data, capsys):
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
                          data={"train_annotations": str(tmp_path / "nowhere.json")})
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "data.train_annotations: annotation file not found" in err and "nowhere.json" in err


def test_mixed_precision_on_the_cpu_is_refused_in_one_line(tmp_path, synthetic_data, capsys):
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out", train={"amp": "bf16", "device": "cpu"})
    assert main(["train", str(config)]) == 2
    assert "train.amp=bf16 needs a CUDA device" in capsys.readouterr().err


def test_fp16_and_bf16_autocast_in_their_own_dtype():
    from refinemask.engine.precision import autocast

    for amp, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        with autocast(amp, torch.device("cpu")):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == dtype
    with autocast("none", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("amp, dtype, kernels", [
    ("bf16", torch.bfloat16, "own"),
    # fp16's GradScaler path on bf16 kernels: the CPU's fp16 convolution backward takes ~50 s a step
    ("fp16", torch.bfloat16, "bf16"),
    pytest.param("fp16", torch.float16, "own", marks=pytest.mark.slow),
])
def test_the_mixed_precision_path_trains_with_float32_boxes(tmp_path, synthetic_data, monkeypatch, amp, dtype, kernels):
    """The autocast + GradScaler plumbing of train.amp, run on the CPU with CUDA's check lifted
    (CPU autocast follows the same rules): convolutions run in half precision, proposals stay
    float32 (torchvision's decoder would cast them down, and bf16 boxes cannot be rasterised
    into mask targets), and the steps train."""
    monkeypatch.setattr("refinemask.engine.train.check_amp", lambda amp, device: None)
    if kernels == "bf16":
        monkeypatch.setattr("refinemask.engine.train.autocast", lambda amp, device: torch.autocast("cpu", dtype=torch.bfloat16))
    config = load_config(write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
                                      train={"amp": amp, "device": "cpu"}))
    trainer = Trainer(config, init_distributed("cpu"))
    if amp == "fp16":  # from 2**16 the scaler would skip these two steps for overflow, as designed
        assert isinstance(trainer.scaler, torch.amp.GradScaler)
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    conv_dtypes, proposal_dtypes = set(), set()
    trainer.model.backbone.body.conv1.register_forward_hook(lambda m, i, out: conv_dtypes.add(out.dtype))
    trainer.model.roi_heads.register_forward_pre_hook(
        lambda m, args: proposal_dtypes.update(p.dtype for p in args[1]))
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    final = load_file(str(trainer.run()))
    assert conv_dtypes == {dtype} and proposal_dtypes == {torch.float32}
    assert all(v.dtype == initial[k].dtype and torch.isfinite(v).all() for k, v in final.items())
    name = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(final[name], initial[name])
    if amp == "fp16":
        assert trainer.scaler.get_scale() == 2.0**4  # no step was skipped


def test_running_out_of_memory_says_what_to_lower(tmp_path, synthetic_data, monkeypatch):
    config = load_config(write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out"))
    trainer = Trainer(config, init_distributed("cpu"))

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "_step", out_of_memory)
    with pytest.raises(RefineMaskError) as err:
        trainer.run()
    message = str(err.value)
    assert "out of memory at iteration 1" in message
    assert all(key in message for key in ("model.max_size", "train.batch_size", "model.box_batch_size_per_image"))


def test_the_same_seed_gives_the_same_weights(tmp_path, synthetic_data):
    finals = []
    for run in ("a", "b"):
        config = load_config(write_config(tmp_path / f"{run}.yaml", synthetic_data, tmp_path / run))
        finals.append(load_file(str(train(config))))
    first, second = finals
    assert all(torch.equal(first[k], second[k]) for k in first)
    seed_everything(0)  # as the trainer does before building the model
    initial = build_model_from_config(load_config(tmp_path / "a.yaml").model).state_dict()
    name = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(first[name], initial[name])  # the two steps did train


def test_a_step_returns_its_losses_and_the_stop_and_time_decisions(tmp_path, synthetic_data):
    from refinemask.engine.stopping import NO_STOP, TERMINATE, StopRequest

    config = load_config(write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out"))
    trainer = Trainer(config, init_distributed("cpu"))
    stream = trainer._samples()
    stop = StopRequest()  # not entered: no signal handlers, only the request
    first = trainer._step(stream, stop)
    assert first.stop == NO_STOP and not first.out_of_time
    assert first.losses and all(math.isfinite(v) for v in first.losses.values())
    stop.request(TERMINATE)
    trainer.deadline = 0.0  # long past
    second = trainer._step(stream, stop)
    assert second.stop == TERMINATE and second.out_of_time
    assert not hasattr(trainer, "out_of_time") and not hasattr(trainer, "stopping")  # nothing left on the trainer
