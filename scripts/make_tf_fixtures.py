"""Write TensorFlow checkpoints of the original Wave-U-Net, and its outputs, for ``import-tf``.

Development only: this script needs TensorFlow 2.15, which needs Python <= 3.11
and numpy < 2, so it runs in its own virtual environment, never in waveunet's::

    python3.11 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install 'tensorflow-cpu==2.15.*' 'numpy<2'
    /work/tfvenv/bin/python scripts/make_tf_fixtures.py --original /work/orig-waveunet

``--original`` is a local copy of the original Wave-U-Net's model code, kept
outside this repository, from three commits of two repositories
(:data:`ORIGINAL_CODE`, also written into each fixture's JSON):

* ``Models/UnetAudioSeparator.py`` and ``Models/InterpolationLayer.py``:
  f90/Wave-U-Net at fe50c52;
* ``Utils.py`` (its functions up to ``crop()``): f90/Wave-U-Net at c102b54;
* ``Models/OutputLayer.py``: the fork mainak0907/Wave-UNet---Audio-Source-Separation-
  at de64320, because the only f90 version of it at hand (b40090c) predates the
  signature that fe50c52's ``UnetAudioSeparator.py`` calls, and the fork's copy has it.

The graph is built by that code itself under
``tf.compat.v1`` (graph mode, placeholders), as the original's Training.py
does: Adam under the ``separator_solver`` scope, one optimiser step so that the
slots exist, a ``global_step``, and ``tf.compat.v1.train.Saver`` (V2 format).

The weights are random, drawn with a variance that keeps the activations'
scale through all levels (normal kernels with variance 2 / (1.04 fan_in),
biases and learned-upsampling logits non-zero), so every parameter visibly
changes the outputs. For each model it writes, under ``--out``::

    NAME/NAME-STEP.index, NAME/NAME-STEP.data-00000-of-00001, NAME/checkpoint
    NAME.npz   input (B, T_in, C); output/<source> (B, T_out, C), the test-time
               outputs; var/<name> for every variable, as TensorFlow reads it back
    NAME.json  the original's model settings, the matching waveunet overrides,
               the step, TensorFlow's version

The default set is small (3 levels, a few filters; the committed fixtures under
``tests/fixtures/tf``), plus ``not_waveunet``, a checkpoint of another graph.
``--full DIR`` writes the paper's M1, M4, M5-HighSR and
M6 at full size instead (about 120 MB each: keep them outside the repository),
without the variable dump.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

# Where each file of --original comes from (repository@commit), as /work/orig-waveunet's
# SOURCE.txt records it.
ORIGINAL_CODE = {
    "Models/UnetAudioSeparator.py": "f90/Wave-U-Net@fe50c52a31b3231a1777f14eb6131a819f082fc8",
    "Models/InterpolationLayer.py": "f90/Wave-U-Net@fe50c52a31b3231a1777f14eb6131a819f082fc8",
    "Utils.py": "f90/Wave-U-Net@c102b544634055a89a007ed8555afc725bc044d9",
    "Models/OutputLayer.py": "mainak0907/Wave-UNet---Audio-Source-Separation-"
                             "@de6432085aa00ea1532c9bea067f1888f06a89ee",
}
VOICE = ["accompaniment", "vocals"]
MULTI = ["bass", "drums", "other", "vocals"]

# The original's settings (Config.py keys) for each fixture; all other keys as its defaults.
BASE = {
    "num_layers": 12, "num_initial_filters": 24, "filter_size": 15, "merge_filter_size": 5,
    "input_filter_size": 15, "output_filter_size": 1, "upsampling": "linear",
    "output_type": "difference", "context": True, "source_names": VOICE,
    "mono_downmix": False, "output_activation": "tanh", "expected_sr": 22050,
}
SMALL = {"num_layers": 3, "num_initial_filters": 3}
FIXTURES = {
    # name: (settings, desired output samples, step)
    "m4_small": ({**SMALL}, 32, 1234),
    "m5_small": ({**SMALL, "upsampling": "learned"}, 32, 2345),
    "m1_small": ({**SMALL, "mono_downmix": True, "context": False, "output_type": "direct"},
                 64, 3456),
    "m6_small": ({**SMALL, "source_names": MULTI}, 32, 4567),
    "multi_direct_linear_small": (
        {**SMALL, "source_names": MULTI, "output_type": "direct", "output_activation": "linear"},
        32, 5678),
}
FULL = {
    # the original's named configs: baseline, baseline_stereo, full_44KHz, full_multi_instrument
    "m1": ({"mono_downmix": True, "context": False, "output_type": "direct"}, 16384, 100),
    "m4": ({}, 16384, 186093),
    "m5_highsr": ({"upsampling": "learned", "expected_sr": 44100}, 16384, 236118),
    "m6": ({"source_names": MULTI}, 16384, 134067),
}


def waveunet_overrides(settings: dict) -> list[str]:
    """The waveunet settings that describe the same network (for the tests' --model runs)."""
    activation = settings["output_activation"]
    output_type = settings["output_type"]
    return [
        f"output={activation}_{output_type}",
        f"model.levels={settings['num_layers']}",
        f"model.initial_filters={settings['num_initial_filters']}",
        f"model.down_kernel={settings['filter_size']}",
        f"model.up_kernel={settings['merge_filter_size']}",
        f"model.output_kernel={settings['output_filter_size']}",
        f"model.channels={1 if settings['mono_downmix'] else 2}",
        f"model.sources=[{','.join(settings['source_names'])}]",
        f"model.context={str(settings['context']).lower()}",
        f"model.upsampling={settings['upsampling']}",
        f"model.sample_rate_hz={settings['expected_sr']}",
    ]


def import_original(original: Path):
    """TensorFlow as the original's code expects it (tf.compat.v1), and its separator class."""
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_eager_execution()
    sys.modules["tensorflow"] = v1  # the original does `import tensorflow as tf` (TF 1.x API)
    sys.modules.setdefault("librosa", types.ModuleType("librosa"))  # imported by Utils, unused here
    sys.path.insert(0, str(original))
    from Models.UnetAudioSeparator import UnetAudioSeparator

    return tf, v1, UnetAudioSeparator


def randomise(v1, sess, variables, rng) -> None:
    """Variance-preserving random weights (see the module docstring)."""
    import numpy as np

    for var in variables:
        shape = var.shape.as_list()
        if var.name.endswith("kernel:0"):
            fan_in = shape[0] * shape[1]
            value = rng.normal(0.0, np.sqrt(2.0 / (1.04 * fan_in)), shape)
        elif var.name.endswith("bias:0"):
            value = rng.normal(0.0, 0.1, shape)
        else:  # interp_<level>: logits of the learned upsampling weights
            value = rng.normal(0.0, 1.0, shape)
        var.load(value.astype(np.float32), sess)


def build_and_save(original: Path, name: str, settings: dict, output_samples: int, step: int,
                   out: Path, dump_variables: bool, seed: int) -> dict:
    import numpy as np

    tf, v1, UnetAudioSeparator = import_original(original)
    v1.reset_default_graph()
    rng = np.random.default_rng(seed)
    config = {**BASE, **settings}
    separator = UnetAudioSeparator(config)
    batch = 2 if dump_variables else 1
    input_shape, output_shape = separator.get_padding(np.array([batch, output_samples, 0]))
    input_shape = [int(v) for v in input_shape]
    mix = v1.placeholder(tf.float32, input_shape, name="mix")
    train_outputs = separator.get_output(mix, True, False, reuse=False)
    test_outputs = separator.get_output(mix, False, False, reuse=True)
    sources = config["source_names"]
    targets = {s: v1.placeholder(tf.float32, train_outputs[s].shape, name=f"target_{s}")
               for s in sources}
    loss = sum(v1.reduce_mean(v1.square(targets[s] - train_outputs[s])) for s in sources)
    global_step = v1.get_variable("global_step", [], initializer=v1.constant_initializer(0),
                                  trainable=False, dtype=tf.int64)
    separator_vars = [v for v in v1.trainable_variables() if "separator" in v.name]
    with v1.variable_scope("separator_solver"):
        solver = v1.train.AdamOptimizer(learning_rate=1e-4).minimize(loss, var_list=separator_vars)

    mixture = np.clip(rng.normal(0.0, 0.4, input_shape), -1, 1).astype(np.float32)
    feed = {mix: mixture}
    feed.update({targets[s]: rng.uniform(-0.5, 0.5, targets[s].shape.as_list()).astype(np.float32)
                 for s in sources})
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        randomise(v1, sess, separator_vars, rng)
        sess.run(solver, feed)  # one Adam step: the slots and beta powers exist and are non-trivial
        global_step.load(step, sess)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        saver = v1.train.Saver(v1.global_variables(), write_version=v1.train.SaverDef.V2,
                               save_relative_paths=True)
        prefix = saver.save(sess, str(folder / name), global_step=step, write_meta_graph=False)
        outputs = sess.run(test_outputs, {mix: mixture})

    arrays = {"input": mixture}
    arrays.update({f"output/{s}": outputs[s] for s in sources})
    if dump_variables:
        reader = tf.train.load_checkpoint(prefix)
        for var_name in sorted(reader.get_variable_to_shape_map()):
            arrays[f"var/{var_name}"] = reader.get_tensor(var_name)
    np.savez(out / f"{name}.npz", **arrays)
    meta = {
        "name": name,
        "prefix": f"{name}/{Path(prefix).name}",
        "step": step,
        "original_settings": config,
        "waveunet_overrides": waveunet_overrides(config),
        "input_samples": input_shape[1],
        "output_samples": int(output_shape[1]),
        "tensorflow": tf.version.VERSION,
        "original_code": ORIGINAL_CODE,
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def save_other_model(original: Path, out: Path, step: int = 77) -> dict:
    """A TensorFlow checkpoint that is not a Wave-U-Net (import-tf must refuse it)."""
    import numpy as np

    tf, v1, _ = import_original(original)
    v1.reset_default_graph()
    with v1.variable_scope("dense"):
        v1.get_variable("kernel", [3, 2], dtype=tf.float32)
        v1.get_variable("bias", [2], dtype=tf.float32)
    v1.get_variable("global_step", [], initializer=v1.constant_initializer(step),
                    trainable=False, dtype=tf.int64)
    name = "not_waveunet"
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        saver = v1.train.Saver(write_version=v1.train.SaverDef.V2, save_relative_paths=True)
        prefix = saver.save(sess, str(out / name / name), global_step=step, write_meta_graph=False)
    reader = tf.train.load_checkpoint(prefix)
    np.savez(out / f"{name}.npz", **{f"var/{n}": reader.get_tensor(n)
                                     for n in sorted(reader.get_variable_to_shape_map())})
    meta = {"name": name, "prefix": f"{name}/{Path(prefix).name}", "step": step,
            "tensorflow": tf.version.VERSION}
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True, type=Path,
                   help="folder with the original's Models/ and Utils.py (not this repository)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent
                   / "tests" / "fixtures" / "tf", help="where the small fixtures go")
    p.add_argument("--full", type=Path, default=None, metavar="DIR",
                   help="write the full-size M1, M4, M5-HighSR and M6 to DIR instead")
    p.add_argument("--only", nargs="*", default=None, help="names to write (default: all)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    args = p.parse_args()
    if not (args.original / "Models" / "UnetAudioSeparator.py").is_file():
        p.error(f"--original {args.original}: no Models/UnetAudioSeparator.py there")
    specs, out = (FULL, args.full) if args.full else (FIXTURES, args.out)
    names = args.only or list(specs) + ([] if args.full else ["not_waveunet"])
    existing = [n for n in names if (out / f"{n}.npz").exists() or (out / n).exists()]
    if existing and not args.force:
        p.error(f"{out}: {', '.join(existing)} already there (--force replaces them)")
    out.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        if name == "not_waveunet":
            print(f"{name}: {save_other_model(args.original, out)['prefix']}")
            continue
        settings, output_samples, step = specs[name]
        meta = build_and_save(args.original, name, settings, output_samples, step, out,
                              dump_variables=not args.full, seed=seed)
        print(f"{name}: {meta['prefix']}, input {meta['input_samples']} -> output "
              f"{meta['output_samples']} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
