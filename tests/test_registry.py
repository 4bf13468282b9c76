"""The attack registry is the one source of the attacks' names, labels, kinds, order, defaults
and random streams: ids are unique and never change, and evaluate's report, the model cards,
the sanity checks and the reproduction tables all follow it."""
import random

import numpy as np
import pytest

from atamp_tf import config, evaluate
from atamp_tf.attacks import autoattack, registry, sanity, spsa, suite
from atamp_tf.tools import reproduction
from atamp_tf.zoo import cards
from atamp_tf.zoo import manifest as zoo_manifest

# The attacks and streams before the registry: stream = 2 + sorted(names).index(name), PGD-20
# and PGD-100 sharing stream 1. Every committed report was drawn with these.
OLD_NAMES = ("natural", "fgsm", "pgd20", "pgd100", "cw_inf", "cw_l2", "spsa", "autoattack",
             "square")
OLD_STREAMS = {name: {"pgd20": 1, "pgd100": 1}.get(name, 2 + sorted(OLD_NAMES).index(name))
               for name in OLD_NAMES}


def test_stream_ids_are_unique_and_todays_attacks_keep_their_old_ids():
    attacks = registry.ATTACKS
    assert {a.name: a.stream for a in attacks if a.name in OLD_NAMES} == OLD_STREAMS
    own = [a.stream for a in attacks if a.same_start_as is None]
    assert len(own) == len(set(own)), "two attacks draw from one stream by accident"
    for attack in attacks:  # the one deliberate sharing: PGD-100 starts where PGD-20 does
        if attack.same_start_as is not None:
            assert attack.stream == registry.get(attack.same_start_as).stream
    assert registry.NEXT_STREAM > max(a.stream for a in attacks)  # a new attack takes a new id
    assert OLD_STREAMS == {"natural": 6, "fgsm": 5, "pgd20": 1, "pgd100": 1, "cw_inf": 3,
                           "cw_l2": 4, "spsa": 9, "autoattack": 2, "square": 10}


def test_every_entry_is_well_formed():
    names = registry.names()
    assert len(set(names)) == len(names) and set(OLD_NAMES) <= set(names)
    labels = [a.label for a in registry.ATTACKS]
    assert len(set(labels)) == len(labels)
    for attack in registry.ATTACKS:
        assert attack.kind in registry.KINDS and attack.runner in registry.RUNNERS
        assert set(attack.norms) <= set(registry.NORMS) and attack.norms
        for other in (attack.extends, attack.same_start_as):
            assert other is None or other in names
        for norm in attack.norms:  # every attack has recorded settings under its norms
            settings = suite.attack_settings(attack.name, norm=norm, eps=0.1)
            if attack.runner == "pgd":
                assert settings["random_stream"] == attack.stream
    with pytest.raises(ValueError, match="unknown attack 'deepfool'"):
        registry.get("deepfool")
    assert registry.cw_name("linf") == "cw_inf" and registry.cw_name("l2") == "cw_l2"


@pytest.mark.parametrize("norm", registry.NORMS)
def test_the_report_order_comes_from_the_registry(norm):
    names = list(registry.names(norm))
    assert evaluate.parse_attacks(None, norm) == registry.table3_attacks(norm)
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)
    assert evaluate.parse_attacks(",".join(shuffled), norm) == tuple(names)
    report = {"threat_model": {"norm": norm, "eps": 0.1}, "num_examples": 1, "seed": 0,
              "seconds": 0.0, "skipped": {}, "checks": [], "worst_case": {"accuracy": 0.0},
              "accuracy": {name: 0.5 for name in reversed(names)},
              "attacks": {}}
    header = next(line for line in evaluate.markdown_report(report).splitlines()
                  if line.startswith("| Defense |"))
    labels = [cell.strip() for cell in header.split("|")[2:-2]]
    assert labels == [registry.get(name).label for name in names]


def test_the_card_order_comes_from_the_registry():
    accuracy = {name: 0.5 for name in reversed(registry.names())}
    accuracy["zz_new"] = accuracy["aa_new"] = 0.1  # unknown names follow, alphabetically
    table = cards._metrics_table({"accuracy": accuracy})  # pylint: disable=protected-access
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == list(registry.names()) + ["aa_new", "zz_new"]


def test_the_reproduction_columns_come_from_the_registry():
    reports = [{"accuracy": {name: 0.5 for name in reversed(registry.names())}}]
    columns = reproduction.evaluation_columns(reports)
    assert columns == list(registry.summary_attacks())
    assert columns == ["natural", "pgd20", "pgd100", "cw_inf", "cw_l2", "autoattack"]
    assert reproduction.column_labels(columns) == (
        "Natural | PGD-20 | PGD-100 | CW-inf | CW-L2 | AutoAttack")
    assert reproduction.evaluation_columns([{"accuracy": {"pgd100": 0.1, "natural": 0.9}}]) == [
        "natural", "pgd100"]


def test_the_sanity_checks_read_the_kinds_and_the_strength_order():
    assert sanity.WHITE_BOX == ("fgsm", "pgd20", "pgd100", "cw_inf", "cw_l2")
    assert sanity.BLACK_BOX == ("spsa", "square")
    assert sanity.ORDER == (("pgd20", "fgsm"),) + tuple(
        ("autoattack", name) for name in sanity.WHITE_BOX)
    assert sanity.CONVERGENCE == (("pgd100", "pgd20"),)  # an ordering it could never fail


def test_the_defaults_are_the_registrys():
    default = suite.SuiteSettings()
    spsa_defaults = registry.get("spsa").defaults
    assert (default.spsa_steps, default.spsa_samples, default.spsa_delta,
            default.spsa_learning_rate) == (spsa_defaults["steps"], spsa_defaults["num_samples"],
                                            spsa_defaults["delta"],
                                            spsa_defaults["learning_rate"])
    assert (spsa.DEFAULT_STEPS, spsa.DEFAULT_NUM_SAMPLES) == (100, 256)
    # the default AutoAttack run is the reference's standard version, and labelled so
    aa = registry.get("autoattack").defaults
    assert {"n_iter": aa["n_iter"], "n_queries": aa["n_queries"]} == autoattack.STANDARD_BUDGET
    assert suite.attack_settings("autoattack", norm="linf", eps=0.1)["version"] == "standard"
    for norm, step in (("linf", 2 / 255), ("l2", 15 / 255)):  # the paper's steps
        eps = 8 / 255 if norm == "linf" else 128 / 255
        assert suite.attack_settings("pgd20", norm=norm, eps=eps)["step_size"] == pytest.approx(
            step, rel=1e-12)
        assert suite.default_step_size(norm, eps) == (eps / 4.0 if norm == "linf"
                                                      else eps * 15.0 / 128.0)


def test_one_list_of_norms():
    assert config.NORMS is registry.NORMS
    assert tuple(zoo_manifest.NORMS) == registry.NORMS  # the zoo's schema, kept TF-free
    assert set(registry.NORM_LABELS) == set(registry.NORMS)
    assert np.all([registry.table3_attacks(norm)[0] == "natural" for norm in registry.NORMS])


def test_headline_attacks_are_registered_strongest_first():
    assert all(registry.get(name) for name in registry.HEADLINE)
    assert registry.HEADLINE[0] == "autoattack"
