"""python -m atamp_tf.train: adversarial training (AT / TRADES / MART / RST / pre-training),
with or without AMP, recorded in a resumable run directory.

    python -m atamp_tf.train --flagfile=flags/quickstart.cfg --out_dir=/tmp/qs
    python -m atamp_tf.train --dataset=svhn --norm=l2     # the paper's SVHN L2 PGD-AT-AMP run

Flags: atamp_tf/flags_def.py (--helpfull). Run directory: atamp_tf/rundir.py. Started again
with the same flags, a run resumes from its last finished epoch.
"""
import sys

from absl import app, flags

from atamp_tf import flags_def

FLAGS = flags_def.define_flags()
flags.adopt_module_key_flags(flags_def)  # --help lists them


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config, recorded = flags_def.config_from_flags()
        from atamp_tf import training  # pylint: disable=import-outside-toplevel  (TensorFlow)
        run = training.setup(config, flags_def.flagfile_text(recorded))
    except ValueError as err:  # data.DataNotPreparedError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    training.fit(run)
    return 0


if __name__ == "__main__":
    app.run(main)
