"""The command line refuses what it cannot do well before any model work: outputs that would
land on an input, unwritable outputs, typos in --model or --device, a folder given to
`embed`, the point grid with a box-only model. Each refusal is one line, exit status 2,
nothing written, no model loaded."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from napari_sam import cli


@pytest.fixture
def model_loads(monkeypatch):
    """Records every attempt to load a model; none is made."""
    import napari_sam.model.loading

    calls = []

    def load_model(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(napari_sam.model.loading, "load_model", load_model)
    return calls


@pytest.fixture
def images(tmp_path):
    """A folder of two small real-typed images (uint16, like microscopy)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, rng.integers(0, 4000, (48, 48), dtype=np.uint16))
    return folder


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def refused(capsys, argv, *needles):
    """Run the CLI, expect exit status 2 and one line of error naming every needle."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------- outputs that are inputs


def test_segment_never_writes_over_its_input_file(images, model_loads, capsys):
    before = contents(images)
    same = str(images / "a.tif")
    refused(capsys, ["segment", same, "-o", same, "--overwrite"], "is the input", "a_sam_labels.tif")
    # The same file by another name: a folder output that would put a.tif in place of a.tif.
    refused(capsys, ["segment", same, "-o", str(images), "--overwrite"], "is the input")
    refused(capsys, ["segment", same, "-o", str(images / ".." / "imgs" / "a.tif")], "is the input")
    assert contents(images) == before and model_loads == []


def test_segment_never_writes_over_a_hard_link_or_symlink_to_its_input(images, tmp_path, model_loads, capsys):
    os.link(images / "a.tif", tmp_path / "hard.tif")
    (tmp_path / "soft.tif").symlink_to(images / "a.tif")
    before = contents(images)
    for name in ("hard.tif", "soft.tif"):
        refused(capsys, ["segment", str(images / "a.tif"), "-o", str(tmp_path / name), "--overwrite"], "is the input")
    assert contents(images) == before and model_loads == []


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_segment_refuses_the_input_folder_as_output_folder(images, tmp_path, model_loads, capsys, overwrite):
    before = contents(images)
    (tmp_path / "link").symlink_to(images)
    for output in (images, f"{images}/.", tmp_path / "link"):
        refused(capsys, ["segment", str(images), "-o", str(output), *overwrite], "is the input folder", "imgs_sam_labels")
    assert contents(images) == before and model_loads == []


def test_segment_writes_nothing_into_an_input_zarr(tmp_path, model_loads, capsys):
    import zarr

    store = tmp_path / "cells.zarr"
    zarr.create_array(str(store), shape=(32, 32), dtype="uint16", fill_value=1)
    before = sorted(p.name for p in store.rglob("*"))
    refused(capsys, ["segment", str(store), "-o", str(store)], "inside the input")
    assert sorted(p.name for p in store.rglob("*")) == before and model_loads == []


def test_segment_refuses_two_inputs_with_one_output(images, tmp_path, model_loads, capsys):
    np.save(images / "a.npy", np.zeros((16, 16), np.uint16))
    refused(capsys, ["segment", str(images), "-o", str(tmp_path / "out")], "a.npy", "a.tif", "both")
    assert not (tmp_path / "out").exists() and model_loads == []


def test_library_jobs_never_write_over_their_input(images):
    from napari_sam.segmentation.automatic import AutoParams
    from napari_sam.cli.batch import Job, run_job, run_jobs_distributed

    before = contents(images)
    same = Job(images / "a.tif", images / "a.tif")
    result = run_job(None, same, AutoParams(), overwrite=True)
    assert result.status == "failed" and "over the input" in result.error
    with pytest.raises(ValueError, match="is the input"):  # before a cluster is started
        run_jobs_distributed([same], AutoParams(), "lite_medsam", "local")
    assert contents(images) == before


def test_embed_never_writes_over_into_or_around_its_input(tmp_path, model_loads, capsys):
    import zarr

    stack = tmp_path / "data" / "stack.npy"
    stack.parent.mkdir()
    np.save(stack, np.zeros((2, 32, 32), np.uint16))
    array = tmp_path / "data" / "stack.zarr"
    zarr.create_array(str(array), shape=(2, 32, 32), dtype="uint16", fill_value=1)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "data").rglob("*"))
    refused(capsys, ["embed", str(stack), "-o", str(stack)], "is the input", "stack_embeddings.zarr")
    refused(capsys, ["embed", str(array), "-o", str(array), "--overwrite"], "is the input")
    refused(capsys, ["embed", str(array), "-o", str(array / "emb")], "inside the input")
    refused(capsys, ["embed", str(stack), "-o", str(stack.parent)], "contains the input")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "data").rglob("*")) == before
    assert model_loads == []


# --------------------------------------------------------------------------- unwritable outputs


def test_unwritable_output_fails_before_the_model_is_loaded(images, tmp_path, model_loads, capsys):
    # As root, chmod does not stop writes; a path under a regular file cannot be written by anyone.
    (tmp_path / "afile.txt").write_text("not a folder")
    blocked = tmp_path / "afile.txt" / "out"
    refused(capsys, ["segment", str(images), "-o", str(blocked)], "cannot write", "afile.txt is a file")
    refused(capsys, ["segment", str(images / "a.tif"), "-o", str(blocked / "a.tif")], "cannot write")
    np.save(tmp_path / "stack.npy", np.zeros((2, 32, 32), np.uint16))
    refused(capsys, ["embed", str(tmp_path / "stack.npy"), "-o", str(blocked / "s.zarr")], "cannot write")
    assert model_loads == []
    assert (tmp_path / "afile.txt").read_text() == "not a folder"


def test_writability_check_leaves_nothing_behind(tmp_path):
    from napari_sam.cli.outputs import OutputError, check_writable_folder

    check_writable_folder(tmp_path / "new" / "deeper")  # proven in tmp_path, where it would be made
    assert list(tmp_path.iterdir()) == []
    check_writable_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable_folder(tmp_path / "f" / "out")


# --------------------------------------------------------------------------- typos in options


@pytest.mark.parametrize("command", ["segment", "embed"])
def test_model_typo_is_one_line_naming_the_models(images, tmp_path, model_loads, capsys, command):
    out = str(tmp_path / ("o.tif" if command == "segment" else "o.zarr"))
    err = refused(capsys, [command, str(images / "a.tif"), "-o", out, "--model", "lite_medsm"],
                  "--model", "unknown model 'lite_medsm'", "vit_b", "did you mean 'lite_medsam'")
    assert err.startswith(f"napari-sam {command}: error:")
    refused(capsys, [command, str(images / "a.tif"), "-o", out, "--model", str(tmp_path / "mine.pth")],
            "checkpoint file", "not found")
    assert model_loads == [] and not (tmp_path / "o.tif").exists() and not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("command", ["segment", "embed"])
def test_device_typo_is_one_line_naming_the_devices(images, tmp_path, model_loads, capsys, command):
    out = str(tmp_path / ("o.tif" if command == "segment" else "o.zarr"))
    refused(capsys, [command, str(images / "a.tif"), "-o", out, "--device", "gpu"],
            "--device", "unknown device 'gpu'", "auto, cpu, cuda, cuda:N", "mps")
    refused(capsys, [command, str(images / "a.tif"), "-o", out, "--device", "cuda:x"], "unknown device")
    assert model_loads == []


def test_model_type_is_checked(images, tmp_path, model_loads, capsys):
    out = str(tmp_path / "o.tif")
    refused(capsys, ["segment", str(images / "a.tif"), "-o", out, "--model-type", "vit_q"], "vit_b", "lite_medsam")
    refused(capsys, ["segment", str(images / "a.tif"), "-o", out, "--model-type", "vit_b"],
            "'lite_medsam' is a lite_medsam", "contradicts")
    assert model_loads == []


def test_valid_spellings_are_accepted():
    args = cli.build_parser().parse_args(["segment", "x.tif", "-o", "y.tif", "--model", "LiteMedSAM",
                                          "--device", "CUDA:1"])
    assert args.device == "cuda:1" and args.model == "LiteMedSAM"
    assert cli.build_parser().parse_args(["embed", "x.tif", "-o", "y.zarr"]).device == "auto"


def test_segment_options_come_from_the_autoparams_table(images, tmp_path, model_loads, capsys):
    from napari_sam.segmentation.auto_params import AutoParams, user_fields
    from napari_sam.cli.segment import params_from_args

    parser = cli.build_parser()
    base = ["segment", "x.tif", "-o", "y.tif"]
    assert params_from_args(parser.parse_args(base)) == AutoParams()
    chosen = params_from_args(parser.parse_args(base + ["--method", "boxes", "--min-diameter", "12", "--crop-layers",
                                                        "1", "--stability-thresh", "0.9", "--min-area", "30"]))
    assert chosen == AutoParams(method="boxes", min_diameter=12.0, crop_n_layers=1, stability_score_thresh=0.9,
                                min_area=30)
    assert cli.main(["segment", "--help"]) == 0
    text = capsys.readouterr().out
    for f in user_fields():
        assert f"--{f.option.replace('_', '-')}" in text, f.name
    assert "measured from the image) (default 0)" in text and "(default by method)" in text
    out = str(tmp_path / "o.tif")
    refused(capsys, ["segment", str(images / "a.tif"), "-o", out, "--min-diameter", "-1"], "--min-diameter", "below 0")
    refused(capsys, ["segment", str(images / "a.tif"), "-o", out, "--nms-thresh", "1.5"], "above 1")
    assert model_loads == []


# --------------------------------------------------------------------------- method and model


def test_grid_with_a_box_only_model_is_refused_at_once(images, tmp_path, model_loads, capsys):
    refused(capsys, ["segment", str(images), "-o", str(tmp_path / "out"), "--method", "grid"],
            "trained on boxes", "'boxes'", "'auto'")
    assert model_loads == [] and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- one reader


def test_embed_and_segment_read_a_zarr_group_alike(tmp_path, model_loads, capsys):
    import zarr

    from napari_sam.segmentation.automatic import AutoParams
    from napari_sam.cli.batch import Job, plan_jobs, run_job
    from napari_sam.cli.read import open_image

    rng = np.random.default_rng(1)
    full, half = rng.integers(0, 4000, (1, 2, 32, 32), dtype=np.uint16), np.zeros((1, 2, 16, 16), np.uint16)
    ome = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    ome.attrs.put({"multiscales": [{"version": "0.4", "datasets": [{"path": "s0"}, {"path": "s1"}]}]})
    ome.create_array("s1", data=half)  # a coarser level sorted first: the metadata decides, not the names
    ome.create_array("s0", data=full)
    zarr.open_group(str(tmp_path / "one.zarr"), mode="w").create_array("raw", data=full[0])
    both = zarr.open_group(str(tmp_path / "both.zarr"), mode="w")
    both.create_array("raw", data=full[0])
    both.create_array("labels", data=half[0])

    seen = []

    def segment(predictor, image, params, progress):  # what the batch runner hands to the model
        seen.append(image)
        return np.zeros(image.shape, np.uint16)

    for name in ("ome.zarr", "one.zarr"):
        result = run_job(None, Job(tmp_path / name, tmp_path / f"{name}.tif"), AutoParams(), segment=segment)
        assert result.status == "done", result.error
        np.testing.assert_array_equal(seen[-1], full[0])  # the full resolution, without length-1 axes
        np.testing.assert_array_equal(np.squeeze(open_image(tmp_path / name)), seen[-1])  # what embed reads
    # A group of several images is refused by both, naming the arrays to choose from.
    failed = run_job(None, Job(tmp_path / "both.zarr", tmp_path / "both.tif"), AutoParams(), segment=segment)
    assert failed.status == "failed" and "pass one of ['labels', 'raw']" in failed.error
    refused(capsys, ["embed", str(tmp_path / "both.zarr"), "-o", str(tmp_path / "e.zarr")],
            "pass one of ['labels', 'raw']", "both.zarr/NAME")
    # ... and the array chosen is taken by both: segment plans one file for it, not a folder.
    assert plan_jobs(tmp_path / "both.zarr" / "raw", tmp_path / "out") == [
        Job(tmp_path / "both.zarr" / "raw", tmp_path / "out" / "raw.tif")]
    assert open_image(tmp_path / "both.zarr" / "raw").shape == (2, 32, 32)
    assert model_loads == []


# --------------------------------------------------------------------------- refine

def test_refine_never_writes_over_its_inputs(images, tmp_path, model_loads, capsys):
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, np.zeros((48, 48), np.uint16))
    before, given = contents(images), labels.read_bytes()
    refused(capsys, ["refine", str(images / "a.tif"), str(labels), "-o", str(labels)], "is the input")
    refused(capsys, ["refine", str(images / "a.tif"), str(labels), "-o", str(tmp_path / "new.tif"),
                     "--report", str(images / "a.tif")], "is the input")
    refused(capsys, ["refine", str(images / "a.tif"), str(images / "b.tif"), "-o", str(labels)], "exists")
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((40, 48), np.uint16))
    refused(capsys, ["refine", str(images / "a.tif"), str(tmp_path / "small.tif"), "-o", str(tmp_path / "x.tif")],
            "same size")
    assert contents(images) == before and labels.read_bytes() == given
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "labels.tif", "small.tif"]
    assert not model_loads


def test_refine_redraws_each_object_and_reports_them_worst_first(nuclei2d, tmp_path, capsys):
    """The real model on 160x160 px of real nuclei whose outlines were drawn 2 px off."""
    import csv

    from napari_sam.metrics import iou
    from napari_sam.variants import corrupted_labels

    image, truth = (np.ascontiguousarray(a[:160, :160]) for a in nuclei2d)
    drawn = corrupted_labels(truth, pixels=2, seed=4)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "drawn.tif", drawn)
    out, report = tmp_path / "refined.tif", tmp_path / "objects.csv"
    code = cli.main(["refine", str(tmp_path / "image.tif"), str(tmp_path / "drawn.tif"), "-o", str(out),
                     "--report", str(report), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    refined = tifffile.imread(out)
    ids = np.unique(truth)[1:]
    assert np.mean([iou(truth == k, refined == k) for k in ids]) > np.mean([iou(truth == k, drawn == k) for k in ids])
    rows = list(csv.DictReader(open(report)))
    assert sorted(int(r["id"]) for r in rows) == ids.tolist()
    quality = [float(r["quality"]) for r in rows]
    assert quality == sorted(quality)  # worst first
    assert np.array_equal(tifffile.imread(tmp_path / "drawn.tif"), drawn)  # the input is untouched
