"""Batch segmentation from the command line: folders, resume, failures, dask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import tifffile

from napari_sam import cli
from napari_sam.cli.batch import plan_jobs, write_labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory, nuclei2d):
    """Three real 160x160 crops of the nucleus image."""
    root = tmp_path_factory.mktemp("images")
    image = nuclei2d[0]
    for i, (r, c) in enumerate([(0, 0), (200, 160), (340, 340)]):
        tifffile.imwrite(root / f"crop{i}.tif", image[r : r + 160, c : c + 160])
    return root


@pytest.fixture(scope="module")
def serial(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    code = cli.main(["segment", str(folder), "-o", str(out), "--device", "cpu", "--precision", "fp32"])
    return code, out


def test_folder_is_segmented_file_by_file(serial, folder, nuclei2d):
    code, out = serial
    assert code == 0
    names = sorted(p.name for p in out.glob("*.tif"))
    assert names == ["crop0.tif", "crop1.tif", "crop2.tif"]
    for name in names:
        labels = tifffile.imread(out / name)
        assert labels.dtype == np.uint16 and labels.shape == (160, 160)
        assert labels.max() >= 5  # each crop holds well over five nuclei
    assert not list(out.glob(".*part"))


def test_rerun_skips_finished_files_and_a_bad_file_fails_alone(serial, folder, tmp_path, capsys):
    code, out = serial
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    bad = tmp_path / "in"
    bad.mkdir()
    for p in folder.glob("*.tif"):
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "broken.tif").write_bytes(b"not a tiff at all")
    capsys.readouterr()
    code = cli.main(["segment", str(bad), "-o", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1  # one file failed
    assert "3 skipped" in err and "1 failed" in err and "broken.tif" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("crop*.tif")} == before
    assert not (out / "broken.tif").exists()


def test_local_cluster_gives_identical_labels(serial, folder, tmp_path):
    code, out = serial
    dist = tmp_path / "dist"
    assert cli.main(["segment", str(folder), "-o", str(dist), "--device", "cpu", "--precision", "fp32",
                     "--scheduler", "local", "--workers", "2"]) == 0
    for p in sorted(out.glob("*.tif")):
        np.testing.assert_array_equal(tifffile.imread(dist / p.name), tifffile.imread(p))


def test_a_stack_spreads_over_the_cluster_with_the_serial_labels(nuclei3d, tmp_path):
    from distributed import Client, LocalCluster, get_task_stream

    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, nuclei3d[0][8:24, :40, :40])  # 11 seeds: two tasks of seeds
    common = ["--device", "cpu", "--precision", "fp32"]
    assert cli.main(["segment", str(stack), "-o", str(tmp_path / "serial.tif"), *common]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client, get_task_stream(client) as tasks:
        assert cli.main(["segment", str(stack), "-o", str(tmp_path / "dist.tif"), *common,
                         "--scheduler", cluster.scheduler_address]) == 0
    carried = [t for t in tasks.data if t["key"].startswith("_carry_on_worker")]
    assert len(carried) == 2 and len({t["worker"] for t in carried}) == 2
    serial = tifffile.imread(tmp_path / "serial.tif")
    assert serial.shape == (16, 40, 40) and serial.max() >= 8
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "dist.tif"), serial)


def test_a_worker_loads_each_model_once_across_runs():
    from types import SimpleNamespace

    from napari_sam.cli.batch import _ModelOnWorker

    worker = SimpleNamespace()
    fp32, bf16 = ("lite_medsam", None, "cpu", "fp32"), ("lite_medsam", None, "cpu", "bf16")
    _ModelOnWorker(fp32, threads=None).setup(worker)
    first = worker.napari_sam_predictors[fp32]
    _ModelOnWorker(fp32, threads=None).setup(worker)  # the next batch on a long-lived cluster
    assert worker.napari_sam_predictors[fp32] is first
    _ModelOnWorker(bf16, threads=None).setup(worker)
    assert worker.napari_sam_predictors[bf16] is not first and worker.napari_sam_predictors[fp32] is first


def test_labels_widen_to_uint32_only_when_needed(tmp_path):
    small = np.arange(12, dtype=np.int64).reshape(3, 4)
    write_labels(tmp_path / "a.tif", small)
    assert tifffile.imread(tmp_path / "a.tif").dtype == np.uint16
    big = small * 10_000
    write_labels(tmp_path / "b.tif", big)
    back = tifffile.imread(tmp_path / "b.tif")
    assert back.dtype == np.uint32 and np.array_equal(back, big)


def test_bad_paths_are_explained(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not found"):
        plan_jobs(tmp_path / "missing.tif", tmp_path / "out.tif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        plan_jobs(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported input"):
        plan_jobs(tmp_path / "notes.txt", tmp_path / "out.tif")
    assert cli.main(["segment", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.tif")]) == 2
    assert "input not found" in capsys.readouterr().err


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_labels_get_the_permissions_of_any_new_file(tmp_path, umask):
    # Written through a temporary file and a rename: the file must not keep a temporary
    # file's private mode (0o600), but get 0o666 less the umask, like any file the user makes.
    old = os.umask(umask)
    try:
        write_labels(tmp_path / "new.tif", np.ones((4, 4), np.uint8))
        (tmp_path / "old.tif").write_bytes(b"")
        write_labels(tmp_path / "old.tif", np.ones((4, 4), np.uint8))  # --overwrite
    finally:
        os.umask(old)
    for name in ("new.tif", "old.tif"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.tif", "old.tif"]
