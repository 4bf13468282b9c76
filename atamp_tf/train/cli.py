"""python -m atamp_tf.train: adversarial training (AT / TRADES / MART / RST / pre-training),
with or without AMP, recorded in a resumable run directory.

    python -m atamp_tf.train --flagfile=flags/quickstart.cfg --out_dir=/tmp/qs
    python -m atamp_tf.train --dataset=svhn --norm=l2     # the paper's SVHN L2 PGD-AT-AMP run

Flags: atamp_tf/train/flags.py (--helpfull). Run directory: atamp_tf/rundir.py. Started again
with the same flags, a run resumes from its last finished epoch.
"""

from absl import flags

from atamp_tf import cli
from atamp_tf.train import flags as flags_def

FLAGS = flags_def.define_flags()
flags.adopt_module_key_flags(flags_def)  # --help lists them


def main(argv):
    cli.no_positional(argv)
    config, recorded = flags_def.config_from_flags()
    from atamp_tf.train import training  # pylint: disable=import-outside-toplevel  (TensorFlow)
    training.fit(training.setup(config, flags_def.flagfile_text(recorded)))


def run():
    cli.run(main)
