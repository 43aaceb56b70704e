"""Audio through the same pipeline: decoding, folders and manifests, the encoders, pooling, CLI, real drums."""

import json

import numpy as np
import pytest
import soundfile as sf

from transfuse.backbones import create_backbone
from transfuse.data import load_source
from transfuse.data.audio import decode_audio
from transfuse.errors import CorruptInputError, DataError, WeightsUnavailableError
from transfuse.extract import extract_features
from transfuse.workflow import fit_source

from conftest import cli, needs_drums, tone


def test_decode_downmixes_and_resamples(tmp_path):
    wave = decode_audio(tone(tmp_path / "a.wav", 440, seconds=1.0, rate=44100, channels=2), 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 16000
    assert abs(np.abs(wave).max() - 0.3) < 0.02
    flac = decode_audio(tone(tmp_path / "b.flac", 440, seconds=0.5, rate=8000, channels=1), 16000)
    assert len(flac) == 8000


def test_bad_audio_is_reported(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really audio")
    with pytest.raises(CorruptInputError, match="cannot decode audio"):
        decode_audio(tmp_path / "junk.wav", 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(CorruptInputError, match="has no samples"):
        decode_audio(tmp_path / "empty.wav", 16000)
    with pytest.raises(CorruptInputError, match="not found"):
        decode_audio(tmp_path / "missing.wav", 16000)


def test_folders_and_manifests_of_audio(tmp_path):
    for cls, freq in (("low", 220), ("high", 1760)):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(2):
            tone(tmp_path / "d" / cls / f"{i}.wav", freq * (1 + i / 10))
    src = load_source(tmp_path / "d")
    assert src.kind == "audio" and src.classes == ["high", "low"] and len(src) == 4
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in zip(src.items, src.labels)))
    assert load_source(manifest).kind == "audio"


def test_encoders_pad_short_clips_and_read_long_ones(tmp_path):
    clips = [tone(tmp_path / "short.wav", 440, seconds=0.1), tone(tmp_path / "long.wav", 440, seconds=6.0),
             tone(tmp_path / "mid.wav", 880, seconds=1.5)]
    for name, width in (("speech_embedding", 192), ("logmel", 128)):
        f = extract_features(clips, backbone=name, cache=False, progress=False)
        assert f.X.shape == (3, width) and np.isfinite(f.X).all()
        alone = extract_features(clips[2:], backbone=name, cache=False, progress=False).X
        np.testing.assert_allclose(alone[0], f.X[2], atol=1e-4)  # padding to the longest clip changes nothing
    both = extract_features(clips, backbone="logmel", layers="mfcc,features", pooling="avg", cache=False,
                            progress=False)
    assert both.slices == {"mfcc": slice(0, 20), "features": slice(20, 84)}
    with pytest.raises(DataError, match="pooling 'gem' does not apply to audio backbones; choose one of meanstd"):
        extract_features(clips, backbone="logmel", pooling="gem", cache=False)


def test_clips_are_batched_by_duration(tmp_path):
    """Short clips go together and a long recording is padded only with its peers."""
    clips = [tone(tmp_path / f"{i}.wav", 440, seconds=s) for i, s in enumerate([30.0, 0.2, 0.3, 25.0, 0.1])]
    batches = list(create_backbone("logmel").batches([str(c) for c in clips], 2, 0, "cpu"))
    assert [sorted(idx.tolist()) for _, idx, _ in batches] == [[1, 4], [2], [3], [0]]
    (waves, lengths), _, _ = batches[0]
    assert waves.shape[1] == int(lengths.max()) == 3200  # 0.2 s at 16 kHz, not 30 s


def test_sound_effects_weights_load_strictly(tmp_path):
    """The aisfx checkpoint (a pickle with numpy scalars) is read with weights_only and loads
    strictly into our network; its taps give frames of 64 ... 512 channels."""
    bb = create_backbone("sound_effects")
    assert bb.tap_shapes() == {"block1": (64,), "block2": (128,), "block3": (256,), "features": (512,)}
    clip = tone(tmp_path / "a.wav", 440, seconds=0.3)  # shorter than 8 spectrogram frames: padded
    pre = extract_features([clip], backbone="sound_effects", cache=False, progress=False).X
    rnd = extract_features([clip], backbone="sound_effects", weights="random", cache=False, progress=False).X
    assert pre.shape == (1, 1024) and np.isfinite(pre).all() and not np.allclose(pre, rnd)


def test_frozen_onnx_encoder_says_so():
    with pytest.raises(WeightsUnavailableError, match="frozen ONNX model.*--backbone logmel"):
        create_backbone("speech_embedding", weights="random")
    assert create_backbone("speech_embedding").tap_shapes() == {"features": (96,)}


@needs_drums
def test_cli_fit_predict_real_drums(drum_folder, tmp_path):
    (drum_folder / "kick" / "broken.wav").write_bytes(b"not audio")
    model = tmp_path / "m"
    run = cli("fit", str(drum_folder), "--out", str(model), "--json")
    assert run.returncode == 2 and "could not be read as audio" in run.stderr and "--skip-bad" in run.stderr
    run = cli("fit", str(drum_folder), "--out", str(model), "--skip-bad", "--json")
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout)
    config = json.loads((model / "config.json").read_text())
    assert config["parts"][0]["meta"]["params"]["backbone"] == "speech_embedding" and metrics["split"]["test"] == 6
    run = cli("predict", str(model), str(drum_folder / "snare"), "--json")
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)) == 8
    run = cli("finetune", str(drum_folder))
    assert run.returncode == 2 and "audio encoders are frozen" in run.stderr


@needs_drums
def test_transfer_and_baseline_on_real_drums(drum_folder):
    """Both the pretrained speech encoder and the log-mel baseline tell kick, snare and hi-hat
    apart far above chance on real hits (the benchmark compares them properly)."""
    src = load_source(drum_folder)
    for backbone in ("speech_embedding", "sound_effects", "logmel"):
        acc = fit_source(src, backbone=backbone, save=False, cache=False, test_size=0.5).metrics["accuracy"]
        assert acc > 0.6, backbone


def test_hf_speech_encoder_from_a_local_directory(tiny_wav2vec2, tmp_path):
    """hf:/dir resolves a wav2vec2-type config to an audio backbone with a tap per hidden layer
    (a tiny randomly initialised model saved locally stands in for a hub download)."""
    name = f"hf:{tiny_wav2vec2}"
    bb = create_backbone(name)
    assert bb.modality == "audio" and bb.tap_names == ["embeddings", "layer.1", "features"]
    clips = [tone(tmp_path / "a.wav", 440, seconds=0.01), tone(tmp_path / "b.wav", 880, seconds=1.0)]
    f = extract_features(clips, backbone=name, layers="layer.1,features", cache=str(tmp_path / "c"),
                         progress=False)
    assert f.X.shape == (2, 128) and np.isfinite(f.X).all()
    alone = extract_features(clips[1:], backbone=name, layers="layer.1,features", cache=False, progress=False)
    np.testing.assert_allclose(alone.X[0], f.X[1], atol=1e-4)
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE is set.*hf:/path/to/model"):
        create_backbone("hf:nobody/no-such-model")
