"""``pimc eval`` end to end on the fixtures: the reports with the paper's figures beside ours, the JSON report, and
one line with exit code 2 for a folder in another layout."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pimc_ray.cli import main
from tests.evaluation.fixtures import EUROSAT_CLASSES, write_eurosat, write_pastis


def pimc(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``pimc <argv>`` (the console script's entry point)."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def variants(report: dict) -> list[str]:
    return [r["variant"] for r in report["results"]]


def test_pastis_forecast_reports_rmse_per_index_beside_the_paper(pastis, joint_checkpoint, tmp_path, capsys):
    root, _ = pastis
    out = tmp_path / "forecast.json"
    argv = ["eval", "pastis", "--root", str(root), "--task", "forecast", "--checkpoint", joint_checkpoint,
            "--max-pixels", "400", "--epochs", "1", "--out", str(out)]  # fmt: skip
    code, stdout, _ = pimc(argv, capsys)
    assert code == 0
    assert "paper (PIMC)" in stdout and all(f in stdout for f in ("0.4849", "0.5464", "0.5387"))
    report = json.loads(out.read_text())
    assert variants(report) == [
        "persistence",
        "raw series, linear",
        "random-init RP encoder, linear probe",
        "random-init RP encoder, fine-tuned",
        "pretrained RP encoder, linear probe",
        "pretrained RP encoder, fine-tuned",
    ]
    assert report["paper"]["scores"] == {"NDVI": 0.4849, "EVI": 0.5464, "SAVI": 0.5387}
    assert report["data"]["train"]["pixels"] == 400 and report["data"]["test"]["pixels"] == 400
    scores = {r["variant"]: r["scores"] for r in report["results"]}
    assert all(math.isfinite(v) for s in scores.values() for v in s.values())
    assert scores["raw series, linear"]["NDVI"] < scores["persistence"]["NDVI"]  # the seasons are learnable
    assert report["results"][-1]["weights"].startswith(joint_checkpoint)


def test_pastis_classification_reports_oa_miou_and_iou_per_class(pastis, capsys, tmp_path):
    root, _ = pastis
    out = tmp_path / "classify.json"
    code, stdout, _ = pimc(["eval", "pastis", "--root", str(root), "--task", "classify", "--max-pixels", "400",
                            "--epochs", "1", "--out", str(out)], capsys)  # fmt: skip
    assert code == 0 and "IoU per class" in stdout
    report = json.loads(out.read_text())
    assert variants(report) == [
        "raw series, linear",
        "random-init RP encoder, linear probe",
        "random-init RP encoder, fine-tuned",
    ]
    raw, probe = report["results"][0], report["results"][1]
    assert raw["scores"]["OA"] > 0.9 and probe["scores"]["OA"] > 0.5  # six classes: chance is about 1/6
    assert set(raw["IoU_per_class"]) == {"Background", "Meadow", "Soft winter wheat", "Corn", "Winter barley",
                                         "Winter rapeseed"}  # fmt: skip
    assert raw["scores"]["mIoU"] == pytest.approx(np.mean(list(raw["IoU_per_class"].values())))


def test_eurosat_reports_accuracy_overall_and_per_class(eurosat, joint_checkpoint, tmp_path, capsys):
    root, _ = eurosat
    out = tmp_path / "eurosat.json"
    # probes only: fine-tuning through the patch grid is tested in test_probes.py
    argv = ["eval", "eurosat", "--root", str(root), "--checkpoint", joint_checkpoint, "--max-per-class", "4",
            "--epochs", "0", "--out", str(out)]  # fmt: skip
    code, stdout, _ = pimc(argv, capsys)
    assert code == 0 and "88.0" in stdout and "accuracy per class" in stdout
    report = json.loads(out.read_text())
    assert variants(report) == [
        "raw band statistics, linear",
        "random-init RSI encoder, linear probe",
        "pretrained RSI encoder, linear probe",
    ]
    assert report["data"]["train"]["images"] == 30 and report["data"]["test"]["images"] == 10
    raw = report["results"][0]
    assert raw["scores"]["accuracy"] > 0.9  # ten spectra and textures: chance is 1/10
    assert len(raw["accuracy_per_class"]) == 10


def _pastis_without_a_file(tmp_path):
    write_pastis(tmp_path, patches=((1, 1, 44), (2, 2, 44)), size=32)
    (tmp_path / "DATA_S2" / "S2_2.npy").unlink()
    return tmp_path, "DATA_S2/S2_2.npy is missing"


def _pastis_with_13_bands(tmp_path):
    write_pastis(tmp_path, patches=((1, 1, 44), (2, 2, 44)), size=32)
    np.save(tmp_path / "DATA_S2" / "S2_1.npy", np.zeros((44, 13, 32, 32), dtype=np.int16))
    return tmp_path, "has shape (44, 13, 32, 32) (13 bands)"


def _pastis_without_metadata(tmp_path):
    (tmp_path / "DATA_S2").mkdir()
    return tmp_path, "has no metadata.geojson"


def _not_a_folder(tmp_path):
    return tmp_path / "nowhere", "is not a folder"


def _eurosat_without_a_class(tmp_path):
    write_eurosat(tmp_path, per_class=1)
    shutil.rmtree(tmp_path / "River")
    return tmp_path, "has no class folder River"


def _eurosat_rgb(tmp_path):
    write_eurosat(tmp_path, per_class=2, bands=3)
    return tmp_path, "has 3 bands, not 13"


@pytest.mark.parametrize(
    ("dataset", "make"),
    [
        ("pastis", _pastis_without_a_file),
        ("pastis", _pastis_with_13_bands),
        ("pastis", _pastis_without_metadata),
        ("pastis", _not_a_folder),
        ("eurosat", _eurosat_without_a_class),
        ("eurosat", _eurosat_rgb),
        ("eurosat", _not_a_folder),
    ],
)
def test_a_folder_in_another_layout_is_one_line_naming_the_layout_and_exit_2(dataset, make, tmp_path, capsys):
    root, problem = make(tmp_path)
    extra = ["--task", "forecast", "--train-folds", "1", "--test-folds", "2"] if dataset == "pastis" else []
    code, _, stderr = pimc(["eval", dataset, "--root", str(root), "--epochs", "0", *extra], capsys)
    assert code == 2
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], stderr
    assert (
        "expected the PASTIS layout" if dataset == "pastis" else "expected the EuroSAT multispectral"
    ) in stderr


def test_a_checkpoint_without_the_tower_is_refused_with_exit_2(rp_checkpoint, tmp_path, capsys):
    write_eurosat(tmp_path, per_class=1)
    argv = ["eval", "eurosat", "--root", str(tmp_path), "--checkpoint", rp_checkpoint]
    code, _, stderr = pimc(argv, capsys)
    assert code == 2 and stderr.count("\n") == 1 and "holds no RSI encoder" in stderr


def test_the_pimc_process_exits_2_with_one_line(tmp_path):
    argv = ["eval", "pastis", "--root", str(tmp_path), "--task", "classify"]
    proc = subprocess.run([sys.executable, "-m", "pimc_ray.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith(
        f"error: PASTIS root {tmp_path.resolve()} has no metadata.geojson; expected the PASTIS"
    )


def test_eval_commands_list_their_options_and_exit_codes(capsys):
    for command in (["eval", "pastis", "--help"], ["eval", "eurosat", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(command)
        out = capsys.readouterr().out
        assert done.value.code == 0 and "--checkpoint" in out and "2 bad input" in out


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--train-folds", "1,2", "--test-folds", "2"], "overlap"),
        (["--steps", "500"], "--steps 500 must lie in 2..128"),
        (["--out", "."], "is a folder"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(pastis, options, problem, capsys):
    root, _ = pastis
    code, _, stderr = pimc(["eval", "pastis", "--root", str(root), "--task", "classify", *options], capsys)
    assert code == 2 and stderr.count("\n") == 1 and problem in stderr, stderr


def test_cuda_where_torch_sees_none_is_one_line_and_exit_2(eurosat, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    code, _, stderr = pimc(["eval", "eurosat", "--root", str(eurosat[0]), "--device", "cuda"], capsys)
    assert (
        code == 2
        and stderr == "error: --device cuda: torch sees no CUDA device here; run with --device cpu\n"
    )


def test_eurosat_takes_the_users_split_files(eurosat, tmp_path, capsys):
    root, _ = eurosat
    (tmp_path / "train.txt").write_text("".join(f"{c}_{n}.jpg\n" for c in EUROSAT_CLASSES for n in (1, 2, 3)))
    (tmp_path / "test.txt").write_text("".join(f"{c}_6.tif\n" for c in EUROSAT_CLASSES))
    out = tmp_path / "report.json"
    argv = ["eval", "eurosat", "--root", str(root), "--epochs", "0", "--out", str(out),
            "--split-files", str(tmp_path / "train.txt"), str(tmp_path / "test.txt")]  # fmt: skip
    code, _, _ = pimc(argv, capsys)
    report = json.loads(out.read_text())
    assert code == 0 and report["data"]["split"].startswith("files ")
    assert report["data"]["train"]["images"] == 30 and report["data"]["test"]["images"] == 10
    assert variants(report) == ["raw band statistics, linear", "random-init RSI encoder, linear probe"]
