"""The attack registry: the one table of the evaluation's attacks and threat models.

Each `Attack` is the single source of its name (the key of report.json's `accuracy` map), its
label, its kind, its place in reports and model cards (the order of `ATTACKS`), the threat
models it runs under, its default settings and its random stream. `atamp_tf.evaluate`,
`attacks.suite`, `attacks.sanity`, `zoo.cards` and the reproduction / sweep tables read it
instead of keeping their own lists. Pure Python (no TensorFlow), so cards and tables render
without it.

Random streams: an attack's random draws are keyed by (seed, stream, batch)
(`suite.batch_seed`), so its stream id is part of every number it ever recorded. The ids are
fixed here, once: today's attacks keep the values `sorted(names).index(name) + 2` had when the
list was closed (PGD-20 and PGD-100 share stream 1 on purpose: the same random start, so with
early stop PGD-100 fools every example PGD-20 fools). A new attack takes the next free id
(`NEXT_STREAM`), and no id is ever reused or renumbered.
"""
import dataclasses
import types

NORMS = ("linf", "l2")
NORM_LABELS = {"linf": "L-inf", "l2": "L2"}
KINDS = ("clean", "white_box", "black_box", "ensemble")
RUNNERS = ("natural", "fgsm", "pgd", "spsa", "autoattack", "square")
# PGD and CW step size per unit of eps: 2/255 at 8/255 under L-inf (Rice et al. 2020's PGD-20
# evaluation step), 15/255 at 128/255 under L2 (the paper's L2 step).
PGD_STEP_PER_EPS = types.MappingProxyType({"linf": 1 / 4, "l2": 15 / 128})
_PGD_IMPLEMENTATION = "cleverhans fast_gradient_method + clip_eta in tf.while_loop"
_AUTOATTACK_QUERIES = 5000
# AutoAttack's named versions (atamp_tf.attacks.autoattack.VERSION_COMPONENTS says what each
# runs); a run with other components or budgets is labelled "custom".
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack of the evaluation. `defaults` are its settings unless overridden (the paper's
    where it gives them); `runner` says which code runs it (suite.make_attack builds natural,
    fgsm, pgd and spsa; evaluate runs autoattack and square through attacks.autoattack)."""
    name: str
    label: str
    kind: str                       # one of KINDS
    stream: int                     # random-stream id, fixed forever (module docstring)
    runner: str                     # one of RUNNERS
    norms: tuple = NORMS            # threat models it runs under
    table3: bool = True             # a column of the paper's Table 3: run by default
    summary: bool = True            # a column of the reproduction and sweep tables
    extends: str | None = None      # the weaker attack it extends: never above its accuracy
    same_start_as: str | None = None  # shares that attack's stream on purpose
    implementation: str = ""
    defaults: types.MappingProxyType = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}))

    @property
    def needs_gradients(self):
        """White-box attacks and the ensemble need input gradients (a Keras model)."""
        return self.kind in ("white_box", "ensemble")


def _defaults(**values):
    return types.MappingProxyType(values)


def _pgd(name, label, stream, steps, loss, **kwargs):
    return Attack(name, label, "white_box", stream, "pgd", implementation=_PGD_IMPLEMENTATION,
                  defaults=_defaults(steps=steps, random_start=True, restarts=1,
                                     early_stop=True, loss=loss), **kwargs)


ATTACKS = (
    Attack("natural", "Natural", "clean", 6, "natural"),
    Attack("fgsm", "FGSM", "white_box", 5, "fgsm", summary=False,
           implementation="cleverhans fast_gradient_method",
           defaults=_defaults(steps=1, random_start=False, loss="cross_entropy")),
    _pgd("pgd20", "PGD-20", 1, 20, "cross_entropy", extends="fgsm"),
    _pgd("pgd100", "PGD-100", 1, 100, "cross_entropy", extends="pgd20", same_start_as="pgd20"),
    # CW: PGD-100 on the Carlini-Wagner margin loss, named by its norm.
    _pgd("cw_inf", "CW-inf", 3, 100, "cw_margin", norms=("linf",)),
    _pgd("cw_l2", "CW-L2", 4, 100, "cw_margin", norms=("l2",)),
    # The paper's SPSA settings (section 4.2): perturbation 0.001, step 0.01, 256 samples.
    Attack("spsa", "SPSA", "black_box", 9, "spsa", summary=False,
           implementation="atamp_tf.attacks.spsa (batched CleverHans spsa, issue 1087 fixed)",
           defaults=_defaults(steps=100, learning_rate=0.01, delta=0.001, num_samples=256,
                              early_stop=True, max_batch=4096, loss="margin")),
    Attack("autoattack", "AutoAttack", "ensemble", 2, "autoattack",
           implementation="atamp_tf.attacks.autoattack",
           defaults=_defaults(version="standard", components=(), n_iter=100,
                              n_queries=_AUTOATTACK_QUERIES)),
    Attack("square", "Square", "black_box", 10, "square", table3=False, summary=False,
           implementation="atamp_tf.attacks.autoattack (Square component)",
           defaults=_defaults(n_queries=_AUTOATTACK_QUERIES)),
)
NEXT_STREAM = 11  # the id the next new attack takes (then increment this)
_BY_NAME = {attack.name: attack for attack in ATTACKS}
# The attacks a one-number summary (the zoo's listing) reports, strongest first.
HEADLINE = ("autoattack", "pgd100", "pgd20")


def get(name):
    """The Attack called `name`; ValueError naming the known attacks otherwise."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def names(norm=None, *, kind=None):
    """Attack names in report order, optionally only those running under `norm` / of `kind`."""
    return tuple(a.name for a in ATTACKS if (norm is None or norm in a.norms)
                 and (kind is None or a.kind == kind))


def table3_attacks(norm):
    """The paper's Table 3 attacks under a norm, in its column order: the default evaluation."""
    return tuple(a.name for a in ATTACKS if norm in a.norms and a.table3)


def summary_attacks():
    """The columns of the reproduction and sweep tables, in report order."""
    return tuple(a.name for a in ATTACKS if a.summary)


def cw_name(norm):
    """The CW attack (PGD on the margin loss) under a norm: cw_inf for L-inf, cw_l2 for L2."""
    return next(a.name for a in ATTACKS if norm in a.norms and a.runner == "pgd"
                and a.defaults["loss"] == "cw_margin")


def sort_names(attack_names):
    """Names in report order; names the registry does not know follow, alphabetically."""
    order = {name: i for i, name in enumerate(_BY_NAME)}
    known = sorted((n for n in attack_names if n in order), key=order.get)
    return known + sorted(n for n in attack_names if n not in order)


def strength_order():
    """(stronger, weaker) pairs whose accuracies must not cross: each attack and the attack it
    extends (PGD-20 <= FGSM), and the ensemble and every white-box attack. An attack that
    continues the one it extends from the same start (PGD-100 after PGD-20, early stop per
    example) cannot cross it by construction: that pair is a convergence pair instead."""
    white_box = names(kind="white_box")
    pairs = []
    for attack in ATTACKS:
        if attack.extends and attack.name not in dict(convergence_pairs()):
            pairs.append((attack.name, attack.extends))
        if attack.kind == "ensemble":
            pairs += [(attack.name, weaker) for weaker in white_box]
    return tuple(pairs)


def convergence_pairs():
    """(longer, shorter) pairs of one attack run for more steps from the same start (PGD-100
    and PGD-20): the extra steps should find almost nothing new once the attack has converged
    (Carlini et al. 2019), a check that can fail, unlike their ordering; it is two-sided, so
    the longer one doing worse (possible with --nopgd_early_stop) fails it too."""
    return tuple((a.name, a.extends) for a in ATTACKS
                 if a.extends and a.same_start_as == a.extends)


def failed_in_report(report):
    """[{name, detail}] of the sanity checks a report.json says failed (read by export and
    the leaderboard entry; here because it needs no TensorFlow)."""
    return [{"name": c["name"], "detail": c.get("detail", "")}
            for c in report.get("checks", ()) if not c.get("passed", True)]
